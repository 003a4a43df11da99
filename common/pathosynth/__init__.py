"""pathosynth: diffusion-based synthesis of medical images for data augmentation, as MONAI bundles."""

__version__ = "0.1.0"
