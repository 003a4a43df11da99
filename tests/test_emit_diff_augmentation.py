"""Classic augmentation overlays of text_edge_controlnet (EMIT-Diff Tab. 2 rows): each overlay of
``configs/augmentation/`` inserts exactly its MONAI transform(s) into train_segmentation.json's pipeline, at the place
of the classic augmentation, and nothing else; spatial transforms move image, label and (with Algorithm 1) the
synthetic variant and its label together, and a real image and its variant get the same draw."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandomizableTransform

from conftest import BUNDLES, bundle_configs
from pathosynth.studies.emit_diff_study import AUGMENTATIONS

CONFIGS = BUNDLES / "text_edge_controlnet" / "configs"
SPATIAL = {"RandFlipd", "RandRotated", "RandZoomd"}
# Tab. 2 row -> the transform classes its overlay must insert, in order
EXPECTED = {
    "RandomContrast": ["RandScaleIntensityFixedMeand"],
    "RandomGamma": ["RandAdjustContrastd"],
    "RandomBrightness": ["RandScaleIntensityd"],
    "RandomNoise": ["RandGaussianNoised"],
    "RandomResolution": ["JointRandSimulateLowResolutiond"],
    "RandomMirror": ["RandFlipd", "RandFlipd"],
    "RandomRotate": ["RandRotated"],
    "RandomScale": ["RandZoomd"],
    "DeepStack": [
        "RandRotated",
        "RandZoomd",
        "RandGaussianNoised",
        "RandGaussianSmoothd",
        "RandScaleIntensityd",
        "RandScaleIntensityFixedMeand",
        "JointRandSimulateLowResolutiond",
        "RandAdjustContrastd",
        "RandAdjustContrastd",
        "RandFlipd",
        "RandFlipd",
    ],
}


def _parser(overlay: str | None, mixing: bool) -> ConfigParser:
    parser = ConfigParser()
    overlays = [f"augmentation/{overlay}"] if overlay else []
    parser.read_config(bundle_configs("text_edge_controlnet", "train_segmentation.json", *overlays))
    parser["synthetic_datalists"] = ["variants.json"] if mixing else []
    return parser


def _names(transforms) -> list[str]:
    return [type(t).__name__ for t in transforms]


def test_every_tab2_augmentation_has_an_overlay_and_no_overlay_is_unlisted():
    assert sorted(p.name for p in (CONFIGS / "augmentation").glob("*.json")) == sorted(AUGMENTATIONS.values())
    assert list(EXPECTED) == list(AUGMENTATIONS)


@pytest.mark.parametrize("mixing", [False, True])
@pytest.mark.parametrize("row", list(AUGMENTATIONS))
def test_overlay_inserts_exactly_its_transform(row, mixing):
    base = _names(_parser(None, mixing).get_parsed_content("train#transforms"))
    parser = _parser(AUGMENTATIONS[row], mixing)
    transforms = parser.get_parsed_content("train#transforms")
    at = base.index("SqueezeDimd") + 1  # right after slice sampling, before the patch mask and the final selection
    assert _names(transforms) == base[:at] + EXPECTED[row] + base[at:]
    images = ["image", "variant"] if mixing else ["image"]
    labels = ["label", "variant_label"] if mixing else ["label"]
    for transform in transforms[at : at + len(EXPECTED[row])]:
        keys = list(transform.keys)
        assert keys == (images + labels if type(transform).__name__ in SPATIAL else images), (
            row,
            type(transform).__name__,
            keys,
        )
    assert parser.get_parsed_content("test#scorer#metadata#augmentation") == row  # recorded in scores.json
    assert parser.get_parsed_content("test#scorer#metadata#augment") is True


def test_without_an_overlay_augment_false_adds_nothing_and_records_no_augmentation():
    parser = _parser(None, True)
    assert "RandAffined" not in _names(parser.get_parsed_content("train#transforms"))
    assert parser.get_parsed_content("test#scorer#metadata#augmentation") is None


@pytest.mark.parametrize("row", list(AUGMENTATIONS))
def test_real_image_and_variant_get_the_same_draw_and_labels_follow(row):
    """A variant equal to its real image stays equal to it through the augmentation (one draw for all keys), and the
    label follows the image through every spatial transform."""
    transforms = _parser(AUGMENTATIONS[row], True).get_parsed_content("train#classic_augmentation")
    for t in transforms:
        if isinstance(t, RandomizableTransform):
            t.prob = 1.0
    chain = Compose(transforms)
    chain.set_random_state(3)
    grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")).sum(0)[None]
    label = ((grid > 40) & (grid < 80)).float() + ((grid > 60) & (grid < 70)).float()
    image = label * 2.0 + torch.sin(grid / 5.0)  # structure that a flip or rotation visibly moves
    for _ in range(4):
        out = chain(
            {"image": image.clone(), "variant": image.clone(), "label": label.clone(), "variant_label": label.clone()}
        )
        assert torch.allclose(torch.as_tensor(out["image"]), torch.as_tensor(out["variant"]), atol=1e-5), row
        assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(out["variant_label"])), row
        assert set(torch.as_tensor(out["label"]).unique().tolist()) <= {0.0, 1.0, 2.0}  # nearest interpolation
    if any(type(t).__name__ in SPATIAL for t in transforms):
        moved = chain(
            {"image": image.clone(), "variant": image.clone(), "label": label.clone(), "variant_label": label.clone()}
        )
        assert not torch.equal(torch.as_tensor(moved["label"]), label)  # the label was transformed with the image


def test_overlays_are_plain_config_keys():
    for path in (CONFIGS / "augmentation").glob("*.json"):
        content = json.loads(path.read_text())
        assert (
            set(content) == {"augment", "augmentation_name", "train#classic_augmentation"}
            and content["augment"] is True
        )
