"""Whole-volume synthesis: crop windows, lesion texture models, paste-back."""

from .lesion_texture import LesionTextureSynthesizer, SynthesisResult, TextureModel
from .windows import covering_windows, pad_to
