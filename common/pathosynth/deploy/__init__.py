"""Deployment: self-contained bundle archives and the code / requirement analysis behind them."""

from .archive import PackError, declared_requirements, pack_bundle, requirement_lines
from .imports import code_closure
