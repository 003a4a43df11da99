"""Normal -> pathological (and pathological -> more pathological) case synthesis.

Controlled lesion synthesis splits a lesion into a mask and its texture (LeFusion Sec. 2.1). This
pipeline composes any mask source (DiffMask, hand-crafted, or the case's own real masks) with any
texture source (LeFusion-J/S, RePaint, hand-crafted): the paper's synthetic sets are

    P'  = real masks of each pathological case, new texture, 1 per case
    N'  = generated masks on each normal case, new texture, 2 per case
    N'' = the same, 5 per case

The written image differs from the input only where the texture source synthesised (the new lesion
voxels for LeFusion and hand-crafted textures); the written label is the input anatomy with the new
lesions.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..seeding import derive_seed
from .results import SynthesisResult, read_case, settings_of


class PathologyPipeline:
    """Mask source then texture source, for the synthesis runner.

    Args:
        texture_source: has ``synthesize(image, label, seed) -> SynthesisResult``.
        mask_source: has ``generate(label, seed) -> (label, info)``; None keeps the case's real lesion masks (P').
    """

    def __init__(self, texture_source, mask_source=None) -> None:
        self.texture_source = texture_source
        self.mask_source = mask_source

    @property
    def checkpoints(self) -> list[str]:
        """Weight files of both sources (hand-crafted sources have none), for provenance."""
        return [c for source in (self.mask_source, self.texture_source) for c in getattr(source, "checkpoints", [])]

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        image, label = read_case(record)
        info: dict = {"mask_source": "real"}
        if self.mask_source is not None:
            label, mask_info = self.mask_source.generate(label, derive_seed(seed, "mask"))
            info = {
                "mask_source": type(self.mask_source).__name__,
                "mask": {**settings_of(self.mask_source), **mask_info},
            }
        result = self.texture_source.synthesize(image, label, derive_seed(seed, "texture"))
        result.info = {
            **info,
            "texture_source": type(self.texture_source).__name__,
            "texture": {**settings_of(self.texture_source), **result.info},
        }
        return result
