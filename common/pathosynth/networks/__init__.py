"""The networks MONAI lacks: the pseudo-3D diffusion UNet, the dual-branch (PatchGAN + edge) discriminator, the
text-conditioned UNet and its ControlNet, edge conditions, and the nnU-Net-planned DynUNet segmenter.

No re-exports: import from the defining module (``pathosynth.networks.pseudo3d_unet.Pseudo3DDiffusionUNet``), so a
bundle ships its own networks only.
"""
