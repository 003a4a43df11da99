from .pseudo3d_unet import Pseudo3DDiffusionUNet
from .segmenter import StackedDeepSupervisionLoss, nnunet_dynunet, plan_dynunet
from .discriminators import DualBranchDiscriminator
from .edges import canny_edges
