"""Training objectives (prepare-batch + loss) and samplers (MONAI-inferer shaped)."""

from .class_conditional import (
    ClassConditionedDiffusionInferer,
    ClassConditionedPrepareBatch,
    drop_class_labels,
    null_class_labels,
)
from .clean_context import CleanContextDiffusionInferer, clean_context_input
from .conditioned import ConditionedDenoiser
from .guided_ddim import GuidedDDIMSampler
from .inpainting import KNOWN_REGIONS, LesionInpaintingSampler, network_evaluations, resampling_schedule
from .label_guided import (
    LabelConditionedPrepareBatch,
    LabelGuidedSampler,
    SpadeDiffusionInferer,
    label_values_of,
    one_hot_labels,
)
from .latent import PIXEL_STATS, DiffusionSpace, estimate_latent_stats
from .objectives import LesionFocusPrepareBatch, MaskedNoiseLoss
from .reference_guidance import GuidanceReference, ReferenceGuidedSampler, low_pass
from .steps import ReverseChain, respaced_timesteps, sample_noise
from .text_edge import EdgeControlPrepareBatch, FrozenUNetControlNetInferer, TextConditionedPrepareBatch
