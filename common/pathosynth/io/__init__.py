"""Atomic writers, NIfTI I/O that preserves geometry and dtype, provenance and preview panels."""

from .atomic import atomic_path, sha256_file, write_json
from .nifti import cast_like, read_nifti, write_nifti_like
