"""Study-level evaluation: reports that compare synthesis methods (tables as Markdown/JSON, plots as PNG)."""

from .segmentation import SegmentationPredictor, SegmentationScorer, datalist_fingerprints
from .similarity import similarity_report, synthetic_case_similarity
