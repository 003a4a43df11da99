"""Lesion masks (pathosynth.masks): DiffMask post-processing inside M_m, MI ⊃ PMO, label maps <-> masks, realism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.io.nifti import read_nifti
from pathosynth.masks.postprocess import (
    enforce_pmo_inside_mi,
    label_to_masks,
    pmo_inside_mi_voxels,
    postprocess_lesion_masks,
    smooth_mask,
    write_lesions,
)
from pathosynth.masks.realism import mask_statistics, realism_report

LV, MYO, MI, PMO = (EMIDEC_LABELS[k] for k in ("LV", "myocardium", "MI", "PMO"))


def ring_case(depth: int = 3, size: int = 48, r_in: float = 8, r_out: float = 14):
    """LV cavity disc + myocardial ring centred on voxel (c, c) on every slice; returns (label, rows-c, cols-c)."""
    c = size // 2
    rows, cols = np.mgrid[0:size, 0:size] - c
    dist = np.hypot(rows, cols)
    plane = np.zeros((size, size), np.uint8)
    plane[dist <= r_in] = LV
    plane[(dist > r_in) & (dist <= r_out)] = MYO
    return np.repeat(plane[..., None], depth, axis=2), rows, cols, dist


def _label_paths(root: Path, prefix: str = "Case_") -> list[Path]:
    return sorted(root.glob(f"{prefix}*/Contours/*.nii*"))


# ---------------------------------------------------------------- smooth_mask


def test_smoothing_removes_speckle_but_keeps_a_large_lesion():
    region = np.ones((40, 40, 3), bool)
    mask = np.zeros_like(region)
    mask[5, 5, 0] = True  # single-voxel speckle
    mask[5, 20:22, 1] = True  # 2-voxel blob
    mask[20:30, 20:30, 1] = True  # 100-voxel lesion
    out = smooth_mask(mask, region)
    assert not out[..., 0].any(), "a single-voxel speckle must vanish"
    assert not out[:10, :, 1].any(), "a 2-voxel blob must vanish"
    large = out[15:35, 15:35, 1]
    assert large[20 - 15 : 30 - 15, 20 - 15 : 30 - 15].sum() >= 90, "the large lesion must survive almost intact"
    assert 0.85 < large.sum() / 100 < 1.25, "smoothing must roughly preserve a large lesion's area"


def test_hole_filling_fills_a_one_voxel_hole():
    region = np.ones((30, 30, 2), bool)
    mask = np.zeros_like(region)
    mask[10:19, 10:19, 0] = True
    mask[14, 14, 0] = False
    # σ = 0.3 alone would leave the hole open (its smoothed value is ~0.01): the filling is what closes it
    out = smooth_mask(mask, region, sigma_range=(0.3, 0.3), threshold_range=(0.5, 0.5))
    assert out[14, 14, 0], "a 1-voxel hole inside a lesion must be filled"
    assert out[..., 0].sum() == 81


def test_a_circumferential_midwall_infarct_does_not_swallow_the_inner_wall():
    """The LV cavity enclosed by a ring-shaped infarct is not a hole of the lesion: the inner wall stays healthy."""
    label, _, _, dist = ring_case(depth=1, r_in=8, r_out=16)
    region = label > LV
    mask = region & (dist[..., None] > 12)  # outer wall all around
    out = smooth_mask(mask, region)
    inner_wall = region & (dist[..., None] <= 10.5)
    assert not (out & inner_wall).any(), "fill-holes must not fill the cavity + inner wall enclosed by a ring"
    assert (out & mask).sum() / mask.sum() > 0.9


def test_smoothing_never_mixes_slices():
    region = np.ones((40, 40, 6), bool)
    mask = np.zeros_like(region)
    mask[10:30, 10:30, 2] = True
    out = smooth_mask(mask, region, sigma_range=(3.0, 3.0))
    assert out[..., 2].any()
    assert not np.delete(out, 2, axis=2).any(), "a lesion on slice 2 must not appear on any other slice"


@pytest.mark.parametrize("seed", range(4))
def test_output_stays_in_region_even_when_input_leaks(seed):
    label, _, _, dist = ring_case(depth=4)
    region = label > LV
    rng = np.random.default_rng(seed)
    leaky = (dist[..., None] < 20) & (rng.random(region.shape) < 0.7)  # covers cavity, wall and outside
    leaky |= rng.random(region.shape) < 0.05  # plus speckle everywhere
    for keep_largest in (False, True):
        out = smooth_mask(leaky, region, keep_largest=keep_largest)
        assert out.any()
        assert not (out & ~region).any(), "smoothed lesions must lie inside M_m"
    mi, pmo = postprocess_lesion_masks(leaky, leaky & (dist[..., None] < 12), region)
    assert not (mi & ~region).any() and not (pmo & ~mi).any()


def test_keep_largest_keeps_one_component():
    region = np.ones((40, 40, 2), bool)
    mask = np.zeros_like(region)
    mask[2:10, 2:10, 0] = True
    mask[20:35, 20:35, 1] = True
    out = smooth_mask(mask, region, keep_largest=True)
    assert not out[..., 0].any() and out[..., 1].any()
    assert smooth_mask(mask, region)[..., 0].any()


# ---------------------------------------------------------------- PMO inside MI


def test_pmo_touching_healthy_myocardium_is_removed_there():
    label, rows, cols, dist = ring_case(depth=1)
    region = label > LV
    mi = region & ((rows >= 0) & (cols > 0))[..., None]  # quarter sector, fully transmural
    pmo = np.zeros_like(mi)
    pmo[24, 33:37, 0] = True  # on the mi sector's lower edge (row 24 = rows 0): its row-23 neighbours are healthy
    pmo[30, 30, 0] = True  # deep inside the sector
    pmo[16, 33, 0] = True  # outside the MI extent (healthy myocardium)
    healthy = region & ~mi
    assert healthy[23, 33:37, 0].all() and mi[30, 30, 0] and healthy[16, 33, 0]
    kept = enforce_pmo_inside_mi(mi, pmo, region)
    assert not kept[24, 33:37, 0].any(), "PMO touching healthy myocardium must be removed"
    assert kept[30, 30, 0], "PMO surrounded by MI must stay"
    assert not kept[16, 33, 0], "PMO outside the MI extent must be removed"
    assert (pmo_inside_mi_voxels(mi, kept, region) == kept).all()


def test_postprocessed_pmo_is_inside_the_postprocessed_infarct():
    label, rows, cols, dist = ring_case(depth=3)
    region = label > LV
    mi = region & ((rows >= 0) & (cols > 0))[..., None]
    pmo = region & ((rows >= -3) & (cols > 2) & (dist < 11))[..., None]  # core leaking across the MI edge
    mi_out, pmo_out = postprocess_lesion_masks(mi, pmo, region)
    assert pmo_out.any()
    assert not (pmo_out & ~mi_out).any(), "PMO ⊂ MI extent"
    assert not (mi_out & ~region).any(), "MI extent ⊂ M_m"
    assert (pmo_inside_mi_voxels(mi_out, pmo_out, region) == pmo_out).all(), "every PMO voxel obeys the rule"
    relabelled = write_lesions(label, EMIDEC_LABELS, mi_out, pmo_out)
    assert mask_statistics(relabelled, EMIDEC_LABELS)["pmo_inside_mi"] == 1.0


# ---------------------------------------------------------------- label maps <-> masks


def test_write_lesions_keeps_everything_outside_mm_and_refuses_masks_leaving_it(phantom_dir):
    paths = _label_paths(phantom_dir, "Case_P")
    label = np.asarray(read_nifti(paths[0])[0])
    other = np.asarray(read_nifti(paths[1])[0])
    mi_old, _, region = label_to_masks(label, EMIDEC_LABELS)
    mi_new, pmo_new, _ = label_to_masks(other, EMIDEC_LABELS)
    depth = min(label.shape[2], other.shape[2])
    mi = np.zeros_like(region)
    pmo = np.zeros_like(region)
    mi[..., :depth], pmo[..., :depth] = mi_new[..., :depth], pmo_new[..., :depth]
    mi, pmo = mi & region, pmo & region & mi
    out = write_lesions(label, EMIDEC_LABELS, mi, pmo)
    assert out.dtype == label.dtype
    assert np.array_equal(out[~region], label[~region]), "voxels outside M_m must be bit-identical"
    assert set(np.unique(out[region])) <= {MYO, MI, PMO}
    assert np.array_equal(out == PMO, pmo) and np.array_equal((out == MI) | (out == PMO), mi)
    assert (mi_old & ~mi).any(), "old lesion voxels must be reset to myocardium"
    assert (out[mi_old & ~mi] == MYO).all()
    leak = mi.copy()
    leak[np.unravel_index(np.flatnonzero(label == LV)[0], label.shape)] = True
    with pytest.raises(ValueError, match="leave the anatomy region"):
        write_lesions(label, EMIDEC_LABELS, leak, pmo)
    with pytest.raises(ValueError, match="leave the anatomy region"):
        write_lesions(label, EMIDEC_LABELS, mi, pmo | (label == 0))


def test_label_to_masks_and_write_lesions_round_trip_phantom_cases(phantom_dir):
    paths = _label_paths(phantom_dir)
    assert len(paths) == 6
    for path in paths:
        label = np.asarray(read_nifti(path)[0])
        mi, pmo, region = label_to_masks(label, EMIDEC_LABELS)
        assert np.array_equal(region, np.isin(label, [MYO, MI, PMO]))
        back = write_lesions(label, EMIDEC_LABELS, mi, pmo)
        assert back.dtype == label.dtype and np.array_equal(back, label), path.name


def test_labels_come_from_the_mapping():
    label, rows, cols, _ = ring_case(depth=2)
    custom = {"background": 0, "LV": 1, "myocardium": 2, "MI": 7, "PMO": 9}
    label[(label == MYO) & ((rows >= 0) & (cols > 0))[..., None]] = 7
    mi, pmo, region = label_to_masks(label, custom)
    assert mi.any() and not pmo.any() and np.array_equal(region, label >= 2)
    assert np.array_equal(write_lesions(label, custom, mi, pmo), label)
    assert mask_statistics(label, custom)["lesion_fraction"] == pytest.approx(0.25)


# ---------------------------------------------------------------- realism statistics


def test_quarter_ring_transmural_lesion_has_known_statistics():
    label, rows, cols, _ = ring_case(depth=3)
    quarter = ((rows >= 0) & (cols > 0))[..., None]  # angles [0°, 90°): sectors 0..8 exactly
    label[(label == MYO) & quarter] = MI
    stats = mask_statistics(label, EMIDEC_LABELS)
    assert stats["lesion_fraction"] == 0.25
    assert stats["transmurality"] == 1.0
    assert stats["components"] == 1 and stats["mi_slices"] == 3
    assert not stats["pmo_present"] and np.isnan(stats["pmo_inside_mi"])


def test_subendocardial_lesion_is_partly_transmural():
    label, rows, cols, dist = ring_case(depth=1, r_in=8, r_out=16)
    label[(label == MYO) & (dist[..., None] <= 12)] = MI  # inner half of the wall, all around
    stats = mask_statistics(label, EMIDEC_LABELS)
    expected = ((label == MI).sum()) / (label >= MYO).sum()  # every sector holds lesion: ≈ the area ratio
    assert stats["transmurality"] == pytest.approx(expected, abs=0.05)
    assert 0.3 < stats["transmurality"] < 0.6


def test_components_follow_the_lesion_connectivity():
    label, rows, cols, _ = ring_case(depth=3)
    sector_a = ((rows >= 0) & (cols > 0))[..., None]
    sector_b = ((rows < 0) & (cols < 0))[..., None]
    two = label.copy()
    two[(two == MYO) & (sector_a | sector_b)] = MI
    assert mask_statistics(two, EMIDEC_LABELS)["components"] == 2, "two separated blobs"
    stacked = label.copy()
    stacked[12, 12:14, 0] = MI
    stacked[12, 13:15, 1] = MI  # overlaps slice 0's footprint at column 13: same lesion
    stacked[13, 15, 2] = MI  # only diagonal to slice 1's voxels: not connected through the 10 mm gap
    assert mask_statistics(stacked, EMIDEC_LABELS)["components"] == 2


def test_pmo_inside_mi_rate_counts_voxels_touching_healthy_myocardium():
    label, rows, cols, _ = ring_case(depth=1)
    label[(label == MYO) & ((rows >= 0) & (cols > 0))[..., None]] = MI
    label[30, 30, 0] = PMO  # surrounded by MI
    label[24, 34, 0] = PMO  # row 23 above it is healthy myocardium
    stats = mask_statistics(label, EMIDEC_LABELS)
    assert stats["pmo_present"] and stats["pmo_inside_mi"] == 0.5
    assert stats["lesion_fraction"] == 0.25, "PMO belongs to the MI extent"


def test_lesion_free_case_statistics():
    label, *_ = ring_case()
    stats = mask_statistics(label, EMIDEC_LABELS)
    assert stats["lesion_fraction"] == 0.0 and stats["components"] == 0 and stats["mi_slices"] == 0
    assert np.isnan(stats["transmurality"]) and not stats["lesion"]


def test_realism_report_writes_json_markdown_and_png(phantom_dir, tmp_path):
    from PIL import Image

    real = _label_paths(phantom_dir, "Case_P")
    generated = []
    for path in real:
        label = np.asarray(read_nifti(path)[0])
        mi, pmo, region = label_to_masks(label, EMIDEC_LABELS)
        mi_s, pmo_s = postprocess_lesion_masks(np.roll(mi, 3, axis=0), np.roll(pmo, 3, axis=0), region)
        generated.append(write_lesions(label, EMIDEC_LABELS, mi_s, pmo_s))
    lesion_free, *_ = ring_case()
    groups = {"real phantom": real, "DiffMask": generated, "hand-crafted": [lesion_free, generated[0]]}
    summary = realism_report(groups, EMIDEC_LABELS, tmp_path / "report", title="test report")
    assert set(summary) == set(groups)
    assert summary["hand-crafted"]["n_no_lesion"] == 1 and summary["hand-crafted"]["n_lesion"] == 1
    assert summary["real phantom"]["n_cases"] == 4 and summary["real phantom"]["lesion_fraction"]["n"] == 4
    content = json.loads((tmp_path / "report" / "mask_realism.json").read_text())
    assert set(content["groups"]) == set(groups)
    assert [c["case"] for c in content["groups"]["real phantom"]["cases"]] == [p.name.split(".")[0] for p in real]
    assert content["groups"]["hand-crafted"]["cases"][0]["transmurality"] is None  # NaN -> null: strict JSON
    markdown = (tmp_path / "report" / "mask_realism.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| statistic"))
    assert all(g in header for g in groups)
    assert "no lesion" in markdown and "transmurality" in markdown and "%" in markdown
    png = tmp_path / "report" / "mask_realism.png"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
    assert not list((tmp_path / "report").glob(".*")), "no temporary files left behind"


# ---------------------------------------------------------------- real EMIDEC


@pytest.mark.realdata
def test_real_emidec_pmo_is_inside_mi_and_lesions_inside_mm(emidec_dir, tmp_path):
    """Measured on the 57 pathological development cases (34 with PMO): pooled PMO-inside-MI 99.83 % of 8,807 PMO
    voxels (15 voxels in 7 cases touch healthy myocardium), worst case 96.5 % (Case_P096); lesions ⊂ M_m."""
    paths = _label_paths(emidec_dir, "Case_P")
    assert len(paths) == 57
    inside = total = 0
    worst = 1.0
    for path in paths:
        label = np.asarray(read_nifti(path)[0])
        mi, pmo, region = label_to_masks(label, EMIDEC_LABELS)
        assert mi.any() and not (mi & ~region).any() and not (pmo & ~mi).any(), path.name
        assert np.array_equal(write_lesions(label, EMIDEC_LABELS, mi, pmo), label), path.name
        ok = pmo_inside_mi_voxels(mi, pmo, region).sum()
        inside, total = inside + ok, total + pmo.sum()
        if pmo.any():
            worst = min(worst, ok / pmo.sum())
    rate = inside / total
    print(f"real EMIDEC PMO inside MI: {rate:.4f} pooled over {total} voxels, worst case {worst:.4f}")
    assert rate >= 0.99, f"pooled PMO-inside-MI rate {rate:.4f} below 0.99"
    assert worst >= 0.95, f"a real case has only {worst:.3f} of its PMO inside MI"


@pytest.mark.realdata
def test_postprocessing_is_nearly_idempotent_on_real_emidec_lesions(emidec_dir):
    """Real masks are the target shape: post-processing them must barely change them (and keep them in M_m)."""
    dice = []
    for path in _label_paths(emidec_dir, "Case_P"):
        mi, pmo, region = label_to_masks(np.asarray(read_nifti(path)[0]), EMIDEC_LABELS)
        mi_s, pmo_s = postprocess_lesion_masks(mi, pmo, region)
        assert not (mi_s & ~region).any() and not (pmo_s & ~mi_s).any()
        dice.append(2 * (mi & mi_s).sum() / (mi.sum() + mi_s.sum()))
    print(f"real EMIDEC MI extent Dice after post-processing: median {np.median(dice):.3f}, min {np.min(dice):.3f}")
    assert np.median(dice) >= 0.93 and np.min(dice) >= 0.85
