"""A closed word vocabulary over the prompts a bundle can produce, saved with the checkpoint.

No pretrained text encoder may be downloaded, so by default the prompt encoder is learned from scratch (see
:mod:`pathosynth.text.encoders`) over the few words the dataset's prompts and the augmentation phrases use. The
tokenizer is therefore a word list: lower-cased words (hyphenated words stay one) and punctuation marks, a
``<bos>`` token first (so the empty prompt of classifier-free guidance is one token, not zero) and ``<pad>``
to a fixed length. The list goes into the checkpoint metadata, so inference tokenizes exactly as training did;
a word the model never saw is an error that names it and the known words, rather than a silent ``<unk>``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PAD, BOS = "<pad>", "<bos>"
_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` ("MRI, heart" -> ["mri", ",", "heart"])."""
    return _TOKEN.findall(str(text).lower())


class PromptVocabulary:
    """Word <-> id map with a fixed sequence length.

    Args:
        tokens: the vocabulary, ``<pad>`` and ``<bos>`` first (as :meth:`build` makes it and checkpoints store it).
        max_length: tokens per encoded prompt, ``<bos>`` included.
    """

    def __init__(self, tokens: Sequence[str], max_length: int) -> None:
        tokens = [str(t) for t in tokens]
        if tokens[:2] != [PAD, BOS]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {BOS!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = tokens
        self.max_length = int(max_length)
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(
        cls,
        prompts: Iterable[str],
        augmentation_phrases: Iterable[str] = (),
        checkpoint: str | os.PathLike | None = None,
    ) -> "PromptVocabulary":
        """The words of ``prompts`` and of ``augmentation_phrases``; room for a prompt plus the longest phrase.

        If ``checkpoint`` exists and records a vocabulary (a resumed run, or stage 2 reading stage 1), that one is
        returned, after checking it knows every word of ``prompts`` and ``augmentation_phrases``.
        """
        prompts, phrases = list(prompts), list(augmentation_phrases)
        if checkpoint is not None and Path(checkpoint).exists():
            saved = cls.from_checkpoint(checkpoint)
            saved.check([*prompts, *phrases], source=f"the data and augmentation phrases (vocabulary of {checkpoint})")
            logger.info(f"prompt vocabulary of {checkpoint}: {len(saved.tokens)} tokens, length {saved.max_length}")
            return saved
        if not prompts:
            raise ValueError("no prompts to build a vocabulary from")
        words = sorted({w for text in [*prompts, *phrases] for w in split_words(text)})
        longest_prompt = max(len(split_words(p)) for p in prompts)
        longest_phrase = max((len(split_words(p)) for p in phrases), default=-1)
        max_length = 1 + longest_prompt + (1 + longest_phrase if phrases else 0)  # <bos> prompt [, phrase]
        return cls([PAD, BOS, *words], max_length)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "PromptVocabulary":
        """The vocabulary stored in a checkpoint's metadata (``vocabulary``, ``max_length``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint {path} does not exist; train the text-conditioned diffusion model first"
            )
        from ..io.checkpoints import checkpoint_metadata  # a flat models/model.pt keeps it in a JSON beside it

        meta = checkpoint_metadata(path)
        if meta.get("vocabulary") is None or meta.get("max_length") is None:
            raise ValueError(
                f"checkpoint {path} records no prompt vocabulary (metadata 'vocabulary', 'max_length'); "
                f"was it trained with a pretrained text encoder ({meta.get('text_encoder')})? then give the same "
                "text_encoder_path"
            )
        return cls(meta["vocabulary"], meta["max_length"])

    def __len__(self) -> int:
        return len(self.tokens)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self.index]

    def check(self, prompts: Iterable[str], source: str = "prompt") -> None:
        """Raise one error naming every unknown word (and the prompt it is in) and every prompt that is too long."""
        problems = []
        for text in prompts:
            unknown = self.unknown_words(text)
            if unknown:
                problems.append(f"{text!r}: unknown word(s) {unknown}")
            elif 1 + len(split_words(text)) > self.max_length:
                problems.append(
                    f"{text!r}: {1 + len(split_words(text))} tokens, more than max_length {self.max_length}"
                )
        if problems:
            known = [t for t in self.tokens if t not in (PAD, BOS)]
            listing = "\n  ".join(problems)
            raise ValueError(f"{source} cannot be tokenized with this vocabulary:\n  {listing}\nknown words: {known}")

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, max_length) long ids: ``<bos>``, the words, ``<pad>``; "" is the null prompt of classifier-free
        guidance."""
        self.check(prompts)
        ids = torch.full((len(prompts), self.max_length), self.index[PAD], dtype=torch.long)
        for row, text in enumerate(prompts):
            seq = [self.index[BOS]] + [self.index[w] for w in split_words(text)]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids

    def metadata(self) -> dict:
        """What a checkpoint stores to rebuild this vocabulary."""
        return {"vocabulary": list(self.tokens), "max_length": self.max_length}
