"""Deterministic procedural EMIDEC-like LGE cardiac MRI phantoms.

Why: the real EMIDEC data (Lalande et al., 2020) may not be shipped with the project, yet the demo
and most tests need labelled delayed-enhancement (LGE) short-axis cases to run on. This module draws
such cases from a small anatomical model and writes them in the exact EMIDEC challenge layout
(``Case_X/Images/Case_X.nii.gz``, ``Case_X/Contours/Case_X.nii.gz``), so code written for the real
data runs unchanged on the phantom.

What it imitates: a thorax ellipse (tissue, lungs, RV blood pool, chest-wall band, air outside), a bright LV
blood pool (label 1) shrinking towards the apex (slice 0 is apical, as in the real export), a dark
nulled myocardial ring (2), and in pathological cases a hyper-enhanced infarct sector (3) growing from
the endocardium with a given transmurality, sometimes holding a dark subendocardial no-reflow core (4).
Intensities are uint8 and follow the per-label means of the real re-export (see ``_REAL_MEANS``);
geometry is given for 256 px in-plane and scaled with ``in_plane``. No real data is contained here.
"""
from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

# Calibration, measured on the 85 real development cases (256 x 256, uint8 range): mean intensity per
# label (body = non-zero background), LV cavity radius 16.9 +- 4.3 px, wall thickness 7.4 +- 1.9 px,
# 5..10 slices, LV centred in the image. Myocardium is set a little darker (nulled), the other
# contrasts relative to it, which lands near these means (blood ~156, MI ~163, PMO ~148).
_REAL_MEANS = {"body": 150, "blood": 159, "myocardium": 145, "mi": 162, "pmo": 151}
AFFINE = np.diag([1.0, 1.0, 10.0, 1.0])  # the spacing the real re-export carries (its true spacing was lost), in mm
_CROSS = ndi.generate_binary_structure(2, 1)[..., None]  # in-plane 4-neighbourhood, per slice


def _smooth_noise(rng, shape, sigma):
    """Unit-range low-frequency random field (per-case texture, irregular borders, bias)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return f / (np.abs(f).max() + 1e-9)


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def make_emidec_like_case(rng: np.random.Generator, pathological: bool, in_plane: int = 128,
                          num_slices: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one LGE short-axis case; returns (image uint8 (H, W, D), label uint8 (H, W, D)).

    Why: gives tests and the demo anatomically plausible, fully labelled data whose variability
    (size, position, slices, contrast, lesion extent, transmurality, PMO presence) comes only from
    ``rng``, so a case is reproducible from its seed.
    """
    H = W = int(in_plane)
    s = in_plane / 256.0
    D = int(num_slices) if num_slices is not None else int(rng.integers(5, 11))
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    cy, cx = H / 2 + rng.uniform(-4, 4) * s, W / 2 + rng.uniform(-4, 4) * s
    r_base = rng.uniform(13.0, 21.0) * s
    ecc, rot = rng.uniform(0.0, 0.12), rng.uniform(0, np.pi)
    thick = max(rng.normal(7.4, 1.0) * s, 3.0)
    harm = rng.uniform(0.05, 0.15), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.08), rng.uniform(0, 2 * np.pi)
    dy, dx = yy - cy, xx - cx
    phi, dist = np.arctan2(dy, dx), np.hypot(dy, dx)
    shape_f = 1 + ecc * np.cos(2 * (phi - rot))
    wall = thick * (1 + harm[0] * np.cos(phi - harm[1]) + harm[2] * np.cos(3 * (phi - harm[3])))

    # Per slice (apex z=0 -> base z=D-1): endocardial radius and relative wall depth w in [0, 1).
    taper = 0.4 + 0.6 * np.sqrt(np.arange(D) / max(D - 1, 1))
    r_endo = (r_base * shape_f)[..., None] * taper
    w = (dist[..., None] - r_endo) / (wall[..., None] * (0.85 + 0.15 * taper))
    cavity, myo = w < 0, (w >= 0) & (w < 1)
    label = np.zeros((H, W, D), np.uint8)
    label[cavity], label[myo] = 1, 2

    mi = pmo = np.zeros_like(myo)
    if pathological:
        noise = _smooth_noise(rng, (H, W, D), (2.0 * s + 0.5, 2.0 * s + 0.5, 0.7))
        half = np.radians(rng.uniform(40, 180)) / 2
        dphi = np.abs(_wrap(phi - rng.uniform(-np.pi, np.pi)))[..., None]
        has_pmo = rng.random() < 0.65
        trans = 1.0 if rng.random() < 0.6 else rng.uniform(0.7 if has_pmo else 0.35, 1.0)
        n_mi = int(min(D, rng.integers(2, D + 1) + rng.integers(0, 3)))
        z0 = int(rng.integers(0, D - n_mi + 1))
        zs = np.zeros(D, bool)
        zs[z0:z0 + n_mi] = True
        sector = dphi < half * (1 + 0.2 * noise)
        depth = trans * (0.6 + 0.4 * np.cos(np.pi / 2 * np.clip(dphi / half, 0, 1))) + 0.15 * noise
        mi = myo & sector & (w < depth) & zs
        for z in np.flatnonzero(zs & ~mi.any((0, 1))):  # keep the MI slice range contiguous
            mi[..., z] = myo[..., z] & (dphi[..., 0] < half) & (w[..., z] < 0.5)
        label[mi] = 3
        if has_pmo:  # dark subendocardial core, strictly surrounded by MI (or cavity) in-plane
            core = mi & (dphi < half * rng.uniform(0.4, 0.7)) & (w < depth * rng.uniform(0.45, 0.6))
            n_p = int(rng.integers(1, n_mi + 1))
            core[..., : z0 + (n_mi - n_p) // 2] = False
            core[..., z0 + (n_mi - n_p) // 2 + n_p:] = False
            pmo = core & ~ndi.binary_dilation((label == 0) | (label == 2), _CROSS)
            label[pmo] = 4

    # Appearance: per-case contrast around the real per-label means.
    i_myo = rng.normal(_REAL_MEANS["myocardium"] - 10, 5)
    i_blood = i_myo + rng.uniform(15, 30)
    i_mi = i_blood + rng.uniform(4, 18)
    i_pmo = i_myo + rng.uniform(0.0, 0.4) * (i_mi - i_myo)
    i_tissue = i_myo + rng.uniform(0, 12)  # real: body ~ myocardium < blood
    tex = _smooth_noise(rng, (H, W), 6 * s + 1)[..., None]
    img = np.broadcast_to(i_tissue + 12 * tex, (H, W, D)).copy()
    # Thorax ellipse with a bright chest-wall band; air (0) outside.
    by, bx = H / 2 + rng.uniform(2, 12) * s, W / 2 + rng.uniform(-10, 10) * s
    ry, rx = rng.uniform(0.42, 0.5) * H, rng.uniform(0.5, 0.58) * W
    rb = np.hypot((yy - by) / ry, (xx - bx) / rx)
    img[(rb > 0.86) & (rb < 1)] = rng.uniform(165, 195)
    for side in (-1, 1):  # darker lungs either side of the mediastinum
        lung = np.hypot((yy - by) / (0.28 * H), (xx - W / 2 - side * 0.3 * W) / (0.13 * W)) < 1
        img[lung] = rng.uniform(90, 120) + 10 * tex[lung]
    # RV blood pool: crescent wrapping the LV on one side, tapering to the apex like the LV.
    r_epi = (r_base + thick) * taper
    a = rng.uniform(0.75, 1.25) * np.pi
    rvy, rvx = cy + np.sin(a) * r_epi, cx + np.cos(a) * r_epi
    rv = (np.hypot(yy[..., None] - rvy, xx[..., None] - rvx) < 1.25 * r_epi) & (dist[..., None] > r_epi + 2 * s + 1)
    img[rv] = i_blood + rng.normal(0, 4)
    img[cavity], img[myo], img[mi], img[pmo] = i_blood, i_myo, i_mi, i_pmo
    img = ndi.gaussian_filter(img, (0.5 + 0.3 * s, 0.5 + 0.3 * s, 0))  # partial volume
    bias = 1 + 0.08 * (rng.uniform(-1, 1) * (yy - H / 2) / H + rng.uniform(-1, 1) * (xx - W / 2) / W
                       + _smooth_noise(rng, (H, W), H / 6))
    img *= bias[..., None]
    sigma = rng.uniform(4.0, 8.0)  # Rician-like: magnitude of a complex Gaussian perturbation
    img = np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    img[rb >= 1] = 0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def _nifti_bytes(arr: np.ndarray) -> bytes:
    img = nib.Nifti1Image(arr, AFFINE)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)  # mtime 0: byte-reproducible


def _write_once(path: Path, data: bytes) -> None:
    """Atomic write; an identical existing file is kept, a differing one is never overwritten."""
    if path.exists():
        if path.read_bytes() == data:
            return
        raise FileExistsError(f"refusing to overwrite differing file: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """Per-case generator from (seed, case id) only, so a case never depends on how many are made."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *case_id.encode("ascii")]))


def generate_emidec_like_dataset(out_dir, n_normal: int = 4, n_pathological: int = 8, seed: int = 0,
                                 in_plane: int = 128) -> list[str]:
    """Write an EMIDEC-layout synthetic dataset to ``out_dir``; returns the sorted case ids.

    Why: the project's embedded default data (real EMIDEC cannot be shipped). Same arguments give
    byte-identical files; existing identical files are left alone and differing ones raise
    ``FileExistsError`` so real or hand-edited data is never clobbered.
    """
    out = Path(out_dir)
    ids = [f"Case_N{i:03d}" for i in range(1, n_normal + 1)]
    ids += [f"Case_P{i:03d}" for i in range(1, n_pathological + 1)]
    for cid in ids:
        image, label = make_emidec_like_case(case_rng(seed, cid), cid.startswith("Case_P"), in_plane)
        _write_once(out / cid / "Images" / f"{cid}.nii.gz", _nifti_bytes(image))
        _write_once(out / cid / "Contours" / f"{cid}.nii.gz", _nifti_bytes(label))
    readme = (
        "SYNTHETIC DATA - not real patients.\n"
        "EMIDEC-like LGE short-axis cardiac MRI phantoms made by pathosynth.data.phantom"
        ".generate_emidec_like_dataset\n"
        f"(seed={seed}, n_normal={n_normal}, n_pathological={n_pathological}, in_plane={in_plane}).\n"
        "Each case is drawn procedurally from numpy SeedSequence([seed, *case_id]); layout and labels\n"
        "follow the EMIDEC challenge: 0 background, 1 LV cavity, 2 healthy myocardium, 3 MI, 4 PMO.\n"
    )
    _write_once(out / "README.txt", readme.encode())
    return sorted(ids)
