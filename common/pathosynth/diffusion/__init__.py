"""Training objectives (prepare-batch + loss) and samplers (MONAI-inferer shaped).

No re-exports: import from the defining module (``pathosynth.diffusion.inpainting.LesionInpaintingSampler``), so
a bundle ships the samplers and objectives of its own method only.
"""
