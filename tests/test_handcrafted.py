"""Hand-crafted lesion synthesis (LeFusion's "Hand-Crafted [9]" baseline): masks stay inside M_m, keep every
other label, put PMO strictly inside MI, hit a requested burden; texture changes only lesion voxels, with
MI brighter than myocardium and PMO darker than MI — on phantom cases and on every real EMIDEC case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.io.nifti import read_nifti
from pathosynth.synthesis.handcrafted import HandcraftedMasks, HandcraftedTexture

L = EMIDEC_LABELS
REGION = [L["myocardium"], L["MI"], L["PMO"]]
LESION = [L["MI"], L["PMO"]]
SEEDS = range(6)


def _arrays(record):
    return np.asarray(read_nifti(record["image"])[0]), np.asarray(read_nifti(record["label"])[0])


def _cases(root, select="all"):
    return load_cases(root, labels=L, lesion_classes=["MI", "PMO"], select=select)


def _pmo_touching_myocardium(label) -> int:
    """PMO voxels with a healthy-myocardium in-plane 4-neighbour (the project's "PMO inside MI" violation)."""
    cross = ndi.generate_binary_structure(2, 1)[..., None]
    return int(((label == L["PMO"]) & ndi.binary_dilation(label == L["myocardium"], cross)).sum())


def _check_mask(label, out):
    region = np.isin(label, REGION)
    assert out.dtype == label.dtype and out.shape == label.shape
    assert not (np.isin(out, LESION) & ~region).any(), "a lesion voxel left M_m"
    assert np.array_equal(out[~region], label[~region]), "a voxel outside M_m changed"
    assert np.isin(out[region], REGION).all(), "M_m voxels must stay myocardium, MI or PMO"
    assert (out == L["MI"]).any(), "every generated case holds MI"
    assert _pmo_touching_myocardium(out) == 0, "PMO touches healthy myocardium"


@pytest.fixture(scope="module")
def phantom_cases(phantom_dir):
    return [(record, *_arrays(record)) for record in _cases(phantom_dir)]


@pytest.fixture(scope="module")
def fitted_texture(phantom_dir):
    return HandcraftedTexture(L).fit(_cases(phantom_dir, "with_lesion"))


def test_masks_stay_in_myocardium_keep_other_labels_and_put_pmo_inside_mi(phantom_cases):
    """Normal and pathological phantoms, several seeds, PMO always requested: all invariants hold and PMO is placed."""
    masks = HandcraftedMasks(L, pmo_probability=1.0)
    groups, pmo_cases = set(), 0
    for record, _, label in phantom_cases:
        groups.add(record["group"])
        for seed in SEEDS:
            out = masks.generate(label, seed)[0]
            _check_mask(label, out)
            pmo_cases += bool((out == L["PMO"]).any())
    assert groups == {"normal", "pathological"}
    assert pmo_cases >= len(phantom_cases) * len(SEEDS) * 0.8, "PMO requested but rarely placed"


def test_existing_lesions_are_replaced_not_kept(phantom_cases):
    """Pathological inputs get new masks: with pmo_probability=0 their real PMO is gone, their MI moved."""
    masks = HandcraftedMasks(L, pmo_probability=0.0)
    for record, _, label in [c for c in phantom_cases if c[0]["group"] == "pathological"]:
        out = masks.generate(label, 0)[0]
        assert not (out == L["PMO"]).any()
        assert not np.array_equal(out == L["MI"], label == L["MI"])


def test_masks_are_deterministic_per_seed(phantom_cases):
    masks = HandcraftedMasks(L)
    for _, _, label in phantom_cases:
        assert np.array_equal(masks.generate(label, 11)[0], masks.generate(label, 11)[0])
        assert not np.array_equal(masks.generate(label, 11)[0], masks.generate(label, 12)[0])


@pytest.mark.parametrize("target", [0.05, 0.15, 0.3, 0.5])
def test_target_burden_is_met_within_two_points(phantom_cases, target):
    """Burden = (MI | PMO) / M_m; phantom M_m holds 500-1400 voxels, so +-0.02 is a few dozen voxels."""
    masks = HandcraftedMasks(L, target_burden=target)
    for _, _, label in phantom_cases:
        out = masks.generate(label, 3)[0]
        _check_mask(label, out)
        burden = np.isin(out, LESION).sum() / np.isin(label, REGION).sum()
        assert abs(burden - target) <= 0.02, f"burden {burden:.3f} for target {target}"


def test_synthesize_case_returns_the_image_untouched_and_records_the_burden(phantom_dir):
    record = _cases(phantom_dir, "normal")[0]
    image, label = _arrays(record)
    result = HandcraftedMasks(L).synthesize_case(record, 5)
    assert result.image.dtype == image.dtype and np.array_equal(result.image, image)
    assert np.array_equal(result.changed, result.label != label) and result.changed.any()
    assert result.info["mask_source"] == "handcrafted"
    burden = np.isin(result.label, LESION).sum() / np.isin(label, REGION).sum()
    assert result.info["lesion_burden"] == pytest.approx(burden)


def test_smoothing_never_deletes_the_whole_lesion(phantom_cases):
    """One-voxel-wide ellipsoids vanish under the opening; the unsmoothed lesion is kept so MI is still there."""
    masks = HandcraftedMasks(L, num_ellipsoids=(1, 1), radius_fraction=(0.01, 0.02), half_extent_slices=(0, 0))
    for _, _, label in phantom_cases:
        out = masks.generate(label, 0)[0]
        _check_mask(label, out)
        assert np.isin(out, LESION).sum() <= 2


def test_case_without_myocardium_is_refused():
    label = np.zeros((20, 20, 4), np.uint8)
    label[5:15, 5:15] = L["LV"]
    with pytest.raises(ValueError, match="M_m is empty"):
        HandcraftedMasks(L).generate(label, 0)


def test_fitted_phantom_stats_order_the_classes(fitted_texture):
    """Phantom contrast (as in real LGE): myocardium < PMO < MI."""
    stats = fitted_texture.stats
    assert stats["MI"][0] > stats["PMO"][0] > 0
    assert all(std > 0 for _, std in stats.values())


def _check_texture(image, label, result):
    lesion = np.isin(label, LESION)
    assert result.image.dtype == image.dtype
    assert np.array_equal(result.image[~lesion], image[~lesion]), "non-lesion voxels must be bit-identical"
    assert np.array_equal(result.changed, lesion) and np.array_equal(result.label, label)
    assert (result.image[lesion] != image[lesion]).mean() > 0.5, "most lesion voxels get new values"
    mean = {
        name: result.image[label == L[name]].astype(float).mean()
        for name in ("myocardium", "MI", "PMO")
        if (label == L[name]).any()
    }
    assert mean["MI"] > mean["myocardium"], mean
    if (label == L["PMO"]).any():
        assert mean["PMO"] < mean["MI"], mean


def test_texture_on_real_and_handcrafted_masks(phantom_cases, fitted_texture):
    """Pathological phantoms with their own masks, normal phantoms with hand-crafted masks (the N' pipeline)."""
    masks = HandcraftedMasks(L, pmo_probability=1.0)
    for record, image, label in phantom_cases:
        if record["group"] == "normal":
            label = masks.generate(label, 1)[0]
        result = fitted_texture.synthesize(image, label, 0)
        _check_texture(image, label, result)
        assert result.info["texture_source"] == "handcrafted" and result.info["reference"] == "myocardium"


def test_texture_is_deterministic_per_seed(phantom_cases, fitted_texture):
    record, image, label = next(c for c in phantom_cases if c[0]["group"] == "pathological")
    first = fitted_texture.synthesize_case(record, 4).image
    assert np.array_equal(first, fitted_texture.synthesize(image, label, 4).image)
    assert not np.array_equal(first, fitted_texture.synthesize(image, label, 5).image)


def test_texture_without_healthy_myocardium_uses_the_surroundings(phantom_cases, fitted_texture):
    _, image, label = next(c for c in phantom_cases if c[0]["group"] == "pathological")
    label = np.where(label == L["myocardium"], L["MI"], label)
    result = fitted_texture.synthesize(image, label, 0)
    assert result.info["reference"] == "surroundings"
    lesion = np.isin(label, LESION)
    assert np.array_equal(result.image[~lesion], image[~lesion])


def test_texture_without_stats_is_refused(phantom_cases):
    _, image, label = phantom_cases[-1]
    with pytest.raises(RuntimeError, match="no stats"):
        HandcraftedTexture(L).synthesize(image, label, 0)
    with pytest.raises(ValueError, match="PMO"):
        HandcraftedTexture(L, stats={"MI": (0.1, 0.02)})


@pytest.mark.realdata
def test_masks_on_every_real_case(emidec_dir):
    """All 85 real EMIDEC cases (256x256, 4-10 slices): lesion in M_m, other labels kept, PMO inside MI."""
    masks = HandcraftedMasks(L, pmo_probability=1.0)
    records = _cases(emidec_dir)
    assert len(records) > 80
    placed = 0
    for index, record in enumerate(records):
        label = np.asarray(read_nifti(record["label"])[0])
        out = masks.generate(label, index)[0]
        _check_mask(label, out)
        placed += bool((out == L["PMO"]).any())
    assert placed >= 0.8 * len(records)


@pytest.mark.realdata
def test_texture_fitted_on_real_cases_brightens_mi(emidec_dir):
    """Stats fitted on the real pathological cases; synthesising each of them keeps MI brighter than myocardium."""
    records = _cases(emidec_dir, "with_lesion")
    texture = HandcraftedTexture(L).fit(records)
    assert texture.stats["MI"][0] > texture.stats["PMO"][0] > 0
    for index, record in enumerate(records):
        image, label = _arrays(record)
        result = texture.synthesize(image, label, index)
        _check_texture(image, label, result)
