"""Deployment: self-contained bundle archives, the code / requirement analysis behind them, and the request check a
bundle served by MONAI Label runs.

No re-exports: import from the defining module (``pathosynth.deploy.archive.pack_bundle``), so a bundle served by
MONAI Label ships the request check, not the packer.
"""
