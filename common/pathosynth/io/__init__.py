"""Atomic writers, NIfTI I/O that preserves geometry and dtype, preview panels, and the synthetic-dataset writer
(:mod:`.synthetic_dataset`, with its output-folder rules in :mod:`.output_folder` and image formats in
:mod:`.image_formats`; imported from there, so ``pathosynth.io`` stays light)."""

from .atomic import atomic_path, sha256_file, write_json
from .nifti import cast_like, read_nifti, write_nifti_like

__all__ = ["atomic_path", "cast_like", "read_nifti", "sha256_file", "write_json", "write_nifti_like"]
