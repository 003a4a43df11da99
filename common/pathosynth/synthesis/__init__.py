"""Whole-volume synthesis: crop windows, lesion texture and mask models (diffusion and hand-crafted),
and the normal->pathological pipeline."""

from .handcrafted import HandcraftedMasks, HandcraftedTexture
from .histogram_texture import TEXTURE_MODES, HistogramTexture
from .label_guided import LabelGuidedSynthesizer
from .lesion_masks import LesionMaskSynthesizer
from .lesion_texture import LesionTextureSynthesizer, TextureModel
from .pipeline import PathologyPipeline
from .reference_guided import PathologyPatchBank, ReferenceGuidedSynthesizer
from .results import SynthesisResult, read_case
from .slice_grid import SliceGrid
from .text_edge import TextEdgeSynthesizer
from .volume_inferer import LesionInpaintingInferer
from .windows import covering_windows, pad_to
