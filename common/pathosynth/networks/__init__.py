from .discriminators import DualBranchDiscriminator
from .edge_maps import EdgeCondition, label_boundaries
from .edges import canny_edges
from .pseudo3d_unet import Pseudo3DDiffusionUNet
from .segmenter import StackedDeepSupervisionLoss, nnunet_dynunet, plan_dynunet
from .text_controlnet import TextConditionedUNet, controlnet_from_unet, freeze
