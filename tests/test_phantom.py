"""Claims about the EMIDEC-like phantom (pathosynth.data.phantom), each checked on generated data."""

import gzip
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from pathosynth.data.phantom import case_rng, generate_emidec_like_dataset, make_emidec_like_case

N_NORMAL, N_PATH, SEED = 4, 12, 0
CROSS = ndi.generate_binary_structure(2, 1)
# Per-label means measured on the real EMIDEC development cases (uint8 range).
REAL_MEANS = {1: 159, 2: 145, 3: 162, 4: 151}


def _files(root, cid):
    return root / cid / "Images" / f"{cid}.nii.gz", root / cid / "Contours" / f"{cid}.nii.gz"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    t0 = time.perf_counter()
    ids = generate_emidec_like_dataset(root, N_NORMAL, N_PATH, seed=SEED)
    elapsed = time.perf_counter() - t0
    cases = {}
    for cid in ids:
        img_f, lab_f = _files(root, cid)
        cases[cid] = (nib.load(img_f), nib.load(lab_f))
    return root, ids, cases, elapsed


def _arrays(cases):
    return {cid: (np.asarray(img.dataobj), np.asarray(lab.dataobj)) for cid, (img, lab) in cases.items()}


@pytest.fixture(scope="module")
def arrays(dataset):
    return _arrays(dataset[2])


def _pathological(arrays):
    return {cid: a for cid, a in arrays.items() if cid.startswith("Case_P")}


def test_layout_and_names_follow_emidec(dataset):
    root, ids, _, _ = dataset
    expected = [f"Case_N{i:03d}" for i in range(1, N_NORMAL + 1)] + [f"Case_P{i:03d}" for i in range(1, N_PATH + 1)]
    assert ids == sorted(expected)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ids
    for cid in ids:
        assert sorted(p.relative_to(root / cid).as_posix() for p in (root / cid).rglob("*") if p.is_file()) == [
            f"Contours/{cid}.nii.gz",
            f"Images/{cid}.nii.gz",
        ]
    readme = (root / "README.txt").read_text()
    assert "synthetic" in readme.lower() and f"seed={SEED}" in readme and f"n_pathological={N_PATH}" in readme
    assert not list(root.rglob("*.tmp")), "temporary files left behind"


def test_dtypes_shape_and_affine(dataset):
    for cid, (img, lab) in dataset[2].items():
        assert img.get_data_dtype() == np.uint8 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape and img.shape[:2] == (128, 128) and 5 <= img.shape[2] <= 10, cid
        for x in (img, lab):
            np.testing.assert_array_equal(x.affine, np.diag([1.0, 1.0, 10.0, 1.0]))
            assert x.header.get_xyzt_units()[0] == "mm"
    assert len({img.shape[2] for img, _ in dataset[2].values()}) > 1, "slice count never varies"


def test_same_seed_gives_identical_bytes_other_seed_differs(dataset, tmp_path):
    root, ids, _, _ = dataset
    generate_emidec_like_dataset(tmp_path / "again", N_NORMAL, N_PATH, seed=SEED)
    generate_emidec_like_dataset(tmp_path / "other", N_NORMAL, N_PATH, seed=SEED + 1)
    for cid in ids:
        for f, g, h in zip(_files(root, cid), _files(tmp_path / "again", cid), _files(tmp_path / "other", cid)):
            data = f.read_bytes()
            assert data[4:8] == b"\0\0\0\0", "gzip mtime must be 0 for reproducibility"
            assert g.read_bytes() == data
            assert h.read_bytes() != data
    assert (root / "README.txt").read_bytes() == (tmp_path / "again" / "README.txt").read_bytes()


def test_case_content_independent_of_case_count(dataset, tmp_path):
    root = dataset[0]
    ids = generate_emidec_like_dataset(tmp_path, n_normal=1, n_pathological=2, seed=SEED)
    assert ids == ["Case_N001", "Case_P001", "Case_P002"]
    for cid in ids:
        for f, g in zip(_files(root, cid), _files(tmp_path, cid)):
            assert f.read_bytes() == g.read_bytes(), cid


def test_label_values_and_lesions_only_in_pathological_cases(arrays):
    for cid, (_, lab) in arrays.items():
        assert set(np.unique(lab)) <= {0, 1, 2, 3, 4}
        assert {1, 2} <= set(np.unique(lab)), cid
        if cid.startswith("Case_N"):
            assert not np.isin(lab, [3, 4]).any(), f"{cid}: normal case has lesion labels"
        else:
            assert (lab == 3).any(), f"{cid}: pathological case without MI"


def test_myocardium_with_lesions_is_one_ring_enclosing_exactly_the_cavity(arrays):
    for cid, (_, lab) in arrays.items():
        for z in range(lab.shape[2]):
            sl = lab[..., z]
            ring, cavity = np.isin(sl, [2, 3, 4]), sl == 1
            assert cavity.any(), f"{cid} slice {z}: no LV cavity"
            np.testing.assert_array_equal(ndi.binary_fill_holes(ring) & ~ring, cavity, err_msg=f"{cid} z={z}")
            assert ndi.label(ring)[1] == 1, f"{cid} z={z}: ring (2/3/4) not one connected piece"


def test_lesions_stay_within_the_wall(arrays):
    """Lesions never eat into the cavity or bulge outside: for each lesion voxel, distance to the
    cavity + distance to the exterior is no more than the wall thickness measured on healthy wall."""
    for cid, (_, lab) in _pathological(arrays).items():
        for z in range(lab.shape[2]):
            sl = lab[..., z]
            lesion, healthy = np.isin(sl, [3, 4]), sl == 2
            if not lesion.any():
                continue
            across = ndi.distance_transform_edt(sl != 1) + ndi.distance_transform_edt(sl != 0)
            assert across[lesion].max() <= 1.3 * across[healthy].max() + 1, f"{cid} z={z}"


def test_mi_grows_from_endocardium_on_contiguous_slices(arrays):
    for cid, (_, lab) in _pathological(arrays).items():
        lesion = np.isin(lab, [3, 4])
        zs = np.flatnonzero(lesion.any(axis=(0, 1)))
        assert len(zs) >= 2 and np.all(np.diff(zs) == 1), f"{cid}: MI slices {zs}"
        assert set(np.flatnonzero((lab == 4).any(axis=(0, 1)))) <= set(zs)
        for z in zs:
            touches = ndi.binary_dilation(lab[..., z] == 1, CROSS) & lesion[..., z]
            assert touches.any(), f"{cid} z={z}: MI not attached to the endocardium"


def test_pmo_is_enclosed_by_mi(arrays):
    n_pmo = 0
    for cid, (_, lab) in _pathological(arrays).items():
        for z in range(lab.shape[2]):
            sl = lab[..., z]
            pmo = sl == 4
            if not pmo.any():
                continue
            n_pmo += 1
            # no healthy myocardium or background 4-neighbour: PMO sits inside MI (or on the cavity)
            assert not (ndi.binary_dilation((sl == 0) | (sl == 2), CROSS) & pmo).any(), f"{cid} z={z}"
            # every PMO voxel has MI close by in-plane, and every PMO blob borders MI
            assert (ndi.binary_dilation(sl == 3, np.ones((7, 7), bool)) | ~pmo).all(), f"{cid} z={z}"
            comps, n = ndi.label(pmo)
            for k in range(1, n + 1):
                border = ndi.binary_dilation(comps == k, CROSS) & ~(comps == k)
                assert (sl[border] == 3).any(), f"{cid} z={z}: PMO blob not bordered by MI"
    assert n_pmo > 0


def test_intensity_ordering_and_calibration(arrays):
    pooled = {k: [] for k in REAL_MEANS}
    for cid, (img, lab) in arrays.items():
        mean = {k: img[lab == k].mean() for k in range(5) if (lab == k).any()}
        for k in pooled:
            if k in mean:
                pooled[k].append(mean[k])
        assert mean[1] > mean[2], f"{cid}: blood not brighter than nulled myocardium"
        assert img[lab == 0].min() == 0, f"{cid}: no air outside the body"
        if 3 in mean:
            assert mean[3] > mean[2] and mean[3] > mean[1], f"{cid}: MI not hyper-enhanced"
        if 4 in mean:
            assert mean[4] < mean[3], f"{cid}: PMO not darker than MI"
    for k, real in REAL_MEANS.items():
        assert abs(np.mean(pooled[k]) - real) < 20, (k, np.mean(pooled[k]), real)


def test_cases_vary(arrays):
    path = _pathological(arrays)
    fractions = [np.isin(lab, [3, 4]).sum() / np.isin(lab, [2, 3, 4]).sum() for _, lab in path.values()]
    assert len(set(np.round(fractions, 3))) == len(fractions) and np.std(fractions) > 0.03, fractions
    has_pmo = [(lab == 4).any() for _, lab in path.values()]
    assert any(has_pmo) and not all(has_pmo), has_pmo
    cavity = [(lab == 1).sum() / lab.shape[2] for _, lab in arrays.values()]
    assert np.std(cavity) / np.mean(cavity) > 0.1, "LV size does not vary"
    blood = [img[lab == 1].mean() for img, lab in arrays.values()]
    assert np.ptp(blood) > 5, "contrast does not vary"


def test_refuses_to_overwrite_differing_file_and_skips_identical(tmp_path):
    generate_emidec_like_dataset(tmp_path, 1, 1, seed=3)
    generate_emidec_like_dataset(tmp_path, 1, 1, seed=3)  # identical files: silently kept
    target = tmp_path / "Case_P001" / "Contours" / "Case_P001.nii.gz"
    target.write_bytes(b"hand-edited contours")
    with pytest.raises(FileExistsError, match="Case_P001.nii.gz"):
        generate_emidec_like_dataset(tmp_path, 1, 1, seed=3)
    assert target.read_bytes() == b"hand-edited contours"
    with pytest.raises(FileExistsError):
        generate_emidec_like_dataset(tmp_path, 1, 1, seed=4)  # a different seed would change the files


def test_make_case_api_and_base_to_apex_taper():
    img, lab = make_emidec_like_case(case_rng(5, "Case_P001"), True, in_plane=96, num_slices=7)
    assert img.dtype == np.uint8 and lab.dtype == np.uint8 and img.shape == lab.shape == (96, 96, 7)
    _, lab_n = make_emidec_like_case(np.random.default_rng(1), False)
    assert not np.isin(lab_n, [3, 4]).any()
    area = (lab_n == 1).sum(axis=(0, 1))
    assert np.all(np.diff(area) >= 0) and area[-1] > 2 * area[0], f"cavity should shrink towards apex: {area}"
    a1, l1 = make_emidec_like_case(case_rng(5, "Case_P001"), True, in_plane=96, num_slices=7)
    assert np.array_equal(a1, img) and np.array_equal(l1, lab)


def test_generation_is_fast(dataset):
    assert dataset[3] < 5.0, f"{N_NORMAL + N_PATH} cases took {dataset[3]:.2f} s"
    gz = gzip.decompress(_files(dataset[0], dataset[1][0])[0].read_bytes())
    assert len(gz) > 128 * 128 * 5  # sanity: really an uncompressed NIfTI payload inside
