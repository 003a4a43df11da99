"""What MONAI's engines lack: resumable checkpoints, sharded synthesis with the output contract, VQ-GAN training.

No re-exports: import from the defining module (``pathosynth.engines.checkpoint.load_weights``), so a bundle
that loads weights does not import, or ship, VQ-GAN training or the synthesis runner.
"""
