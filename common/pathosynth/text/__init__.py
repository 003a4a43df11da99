"""Text conditioning: prompts from dataset metadata, their vocabulary, and prompt encoders (EMIT-Diff).

No re-exports: import from the defining module (``pathosynth.text.prompts.CasePrompts``).
"""
