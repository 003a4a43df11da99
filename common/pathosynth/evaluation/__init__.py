"""Study-level evaluation: reports that compare synthesis methods (tables as Markdown/JSON, plots as PNG)."""

from .classification_report import write_results_table
from .classifiers import CLASSIFIERS, build_classifier, cross_validate, evaluate_folds, stratified_folds
from .explanations import explain, explanation_method, save_explanation_figure
from .segmentation import SegmentationPredictor, SegmentationScorer, datalist_fingerprints
from .similarity import similarity_report, synthetic_case_similarity
