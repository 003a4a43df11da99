"""Atomic writers, NIfTI I/O that preserves geometry and dtype, preview panels, datalist files, safe checkpoint
reading, and the synthetic-dataset writer (:mod:`.synthetic_dataset`, with its output-folder rules in
:mod:`.output_folder` and image formats in :mod:`.image_formats`).

No re-exports: import from the defining module (``pathosynth.io.atomic.write_json``), so ``pathosynth.io`` stays light
and a bundle ships the I/O modules its code uses only.
"""
