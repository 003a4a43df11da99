"""Study-level evaluation: reports that compare synthesis methods (tables as Markdown/JSON, plots as PNG)."""

from .similarity import similarity_report, synthetic_case_similarity
