"""Whole-volume synthesis: crop windows, lesion texture and mask models (diffusion and hand-crafted),
and the normal->pathological pipeline.

No re-exports: import from the defining module (``pathosynth.synthesis.lesion_texture.LesionTextureSynthesizer``),
so a bundle ships its own synthesiser and what it imports only.
"""
