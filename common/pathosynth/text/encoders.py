"""Prompt encoders for cross-attention conditioning: learned from scratch (default) or a local pretrained model.

EMIT-Diff conditions Stable Diffusion 1.5 on prompts encoded by its frozen CLIP text encoder. No weights may be
downloaded here, so the default encoder is learned jointly with the diffusion model: a token embedding over the
prompt vocabulary (:class:`~pathosynth.text.vocabulary.PromptVocabulary`), a learned position embedding and a
small pre-norm transformer. With a local pretrained text model (e.g. a CLIP text encoder saved on disk) the
user gets the paper's setting instead; that path needs the optional ``transformers`` package and never
touches a hub.

Every encoder has one interface, so configs and the diffusion code need not know which one runs:
``tokenize(prompts) -> (B, L) long ids`` and ``forward(ids) -> (B, L, dim)`` context, plus ``dim``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..options import as_flag
from .vocabulary import PromptVocabulary


class LearnedPromptEncoder(nn.Module):
    """Token + position embeddings and a small transformer, trained with the diffusion model.

    Args:
        vocabulary: the closed word vocabulary (its size and sequence length fix the embedding tables).
        dim: context dimension (the UNet's ``cross_attention_dim``).
        num_layers: transformer encoder layers (0 = embeddings only).
        num_heads: attention heads per layer.
    """

    kind = "learned"

    def __init__(self, vocabulary: PromptVocabulary, dim: int = 256, num_layers: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.dim = int(dim)
        self.token_embedding = nn.Embedding(len(vocabulary), self.dim)
        self.position_embedding = nn.Parameter(torch.randn(vocabulary.max_length, self.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            self.dim, int(num_heads), 4 * self.dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = (
            nn.TransformerEncoder(layer, int(num_layers), enable_nested_tensor=False) if num_layers else None
        )
        self.norm = nn.LayerNorm(self.dim)
        self.settings_ = {
            "text_encoder": self.kind,
            "text_embedding_dim": self.dim,
            "text_encoder_layers": int(num_layers),
            "text_encoder_heads": int(num_heads),
        }

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.vocabulary.encode(list(prompts))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        if self.transformer is not None:
            x = self.transformer(
                x
            )  # no padding mask: the UNet's cross-attention sees the pad positions too (as SD does)
        return self.norm(x)

    def settings(self) -> dict:
        return dict(self.settings_)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "text_encoder_path needs the optional package 'transformers' (pip install transformers), which is not "
            "installed; without it use the default learned prompt encoder (text_encoder_path null)"
        ) from None
    return transformers


class LocalPretrainedTextEncoder(nn.Module):
    """A pretrained text model read from a local directory (``save_pretrained`` layout), never from a hub.

    A CLIP directory (full CLIP or text part) loads as ``CLIPTextModel``, anything else as ``AutoModel``; the context
    is the last hidden state, as Stable Diffusion uses it. Frozen unless ``trainable``.

    Args:
        path: local directory with the model config, weights and tokenizer files.
        max_length: tokens per prompt (padded/truncated); None = the tokenizer's own limit (77 for CLIP).
        trainable: fine-tune it with the diffusion model (default frozen, as in Stable Diffusion / EMIT-Diff).
    """

    kind = "pretrained"

    def __init__(self, path: str | os.PathLike, max_length: int | None = None, trainable: bool = False) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"text_encoder_path {path} is not a local directory; pretrained text encoders are read "
                "from a folder written by save_pretrained, never downloaded"
            )
        transformers = _transformers()
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        model_class = (
            transformers.CLIPTextModel if str(config.model_type).startswith("clip") else transformers.AutoModel
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = model_class.from_pretrained(path, local_files_only=True)
        self.max_length = int(max_length or min(self.tokenizer.model_max_length, 512))
        self.dim = int(self.model.config.hidden_size)
        self.trainable = as_flag(trainable, "train_text_encoder")
        self.model.requires_grad_(self.trainable)
        self.settings_ = {
            "text_encoder": self.kind,
            "text_encoder_path": str(path.resolve()),
            "text_embedding_dim": self.dim,
            "max_length": self.max_length,
        }

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )["input_ids"]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # frozen: no dropout either
        return self

    def settings(self) -> dict:
        return dict(self.settings_)


def build_text_encoder(
    vocabulary: PromptVocabulary,
    path: str | os.PathLike | None = None,
    dim: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int | None = None,
    trainable: bool = False,
) -> nn.Module:
    """The learned prompt encoder over ``vocabulary``, or, when ``path`` is given, the local pretrained one."""
    if path in (None, "", "None", "null"):
        return LearnedPromptEncoder(vocabulary, dim=dim, num_layers=num_layers, num_heads=num_heads)
    return LocalPretrainedTextEncoder(path, max_length=max_length, trainable=trainable)
