"""Study-level evaluation: reports that compare synthesis methods (tables as Markdown/JSON, plots as PNG).

No re-exports: import from the defining module (``pathosynth.evaluation.segmentation.SegmentationScorer``), so
a bundle that scores segmentations does not ship the classifiers and explanation maps.
"""
