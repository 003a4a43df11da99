"""Whole-volume synthesis: crop windows, lesion texture and mask models (diffusion and hand-crafted),
and the normal->pathological pipeline."""

from .handcrafted import HandcraftedMasks, HandcraftedTexture
from .lesion_masks import LesionMaskSynthesizer
from .lesion_texture import LesionTextureSynthesizer, TextureModel
from .pipeline import PathologyPipeline
from .results import SynthesisResult, read_case
from .windows import covering_windows, pad_to
from .label_guided import LabelGuidedSynthesizer
from .slice_grid import SliceGrid
from .text_edge import TextEdgeSynthesizer
from .reference_guided import PathologyPatchBank, ReferenceGuidedSynthesizer
from .volume_inferer import LesionInpaintingInferer
