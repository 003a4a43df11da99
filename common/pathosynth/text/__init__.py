"""Text conditioning: prompts from dataset metadata, their vocabulary, and prompt encoders (EMIT-Diff)."""

from .encoders import LearnedPromptEncoder, LocalPretrainedTextEncoder, build_text_encoder
from .prompts import (
    ACDC_CATEGORIES,
    AUGMENTATION_PHRASES,
    CARDIAC_CATEGORIES,
    EMIDEC_CATEGORIES,
    CasePrompts,
    augmented_prompt,
    join_prompt,
    with_prompts,
)
from .vocabulary import PromptVocabulary, split_words
