"""Deployment: self-contained bundle archives, the code / requirement analysis behind them, and the request check a
bundle served by MONAI Label runs."""

from .archive import PackError, declared_requirements, pack_bundle, requirement_lines
from .imports import code_closure
from .monailabel import RequireRequestKeysd
