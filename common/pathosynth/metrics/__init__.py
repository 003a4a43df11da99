"""Metrics shared by every bundle: image similarity (whole image or a region, on a declared intensity range),
distribution distances (FID/KID with a pluggable, download-free feature extractor), per-class segmentation
scores with defined empty-mask semantics, and classification scores.

Built on MONAI's metric functions; each module's docstring states the conventions that change the numbers.

No re-exports: import from the defining module (``pathosynth.metrics.segmentation.segmentation_scores``), so a
bundle that scores segmentations does not ship the feature extractors behind FID/KID.
"""
