"""Metrics shared by every bundle: image similarity (whole image or a region, on a declared intensity range),
distribution distances (FID/KID with a pluggable, download-free feature extractor), per-class segmentation
scores with defined empty-mask semantics, and classification scores.

Built on MONAI's metric functions; each module's docstring states the conventions that change the numbers.
"""

from .classification import classification_scores
from .distribution import distribution_scores, extract_features, frechet_distance, kernel_inception_distance
from .extractors import EXTRACTORS, make_extractor
from .features import FeatureExtractor, RandomConvFeatures
from .image import IMAGE_METRICS, image_similarity, lesion_region_similarity, per_slice_ssim, ssim_map
from .pretrained_features import MonaiDenseNetFeatures, MonaiResNetFeatures, TorchvisionInceptionFeatures
from .segmentation import SEGMENTATION_METRICS, segmentation_scores, summarise_scores
