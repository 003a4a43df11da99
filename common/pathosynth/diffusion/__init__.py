"""Training objectives (prepare-batch + loss) and samplers (MONAI-inferer shaped)."""

from .inpainting import LesionInpaintingSampler, network_evaluations, resampling_schedule, respaced_timesteps
from .objectives import LesionFocusPrepareBatch, MaskedNoiseLoss
