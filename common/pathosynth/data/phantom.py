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

``generate_acdc_like_dataset`` does the same for ACDC cine MRI (Bernard et al., 2018): end-diastolic and
end-systolic frames of one heart (RV crescent, myocardial ring, LV cavity; blood bright, myocardium dark) in the
ACDC layout (``patientXXX/patientXXX_frameYY[_gt].nii.gz`` + ``Info.cfg``).
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


def make_emidec_like_case(
    rng: np.random.Generator, pathological: bool, in_plane: int = 128, num_slices: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        zs[z0 : z0 + n_mi] = True
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
            core[..., z0 + (n_mi - n_p) // 2 + n_p :] = False
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
    bias = 1 + 0.08 * (
        rng.uniform(-1, 1) * (yy - H / 2) / H
        + rng.uniform(-1, 1) * (xx - W / 2) / W
        + _smooth_noise(rng, (H, W), H / 6)
    )
    img *= bias[..., None]
    sigma = rng.uniform(4.0, 8.0)  # Rician-like: magnitude of a complex Gaussian perturbation
    img = np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))
    img[rb >= 1] = 0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def _nifti_bytes(arr: np.ndarray, affine: np.ndarray = AFFINE) -> bytes:
    img = nib.Nifti1Image(arr, affine)
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


def generate_emidec_like_dataset(
    out_dir, n_normal: int = 4, n_pathological: int = 8, seed: int = 0, in_plane: int = 128
) -> list[str]:
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


# --- ACDC-like cine phantoms -------------------------------------------------------------------------------------
# Calibration, measured on the 80 real ACDC development patients (min-max normalised to [0, 1] per volume):
# mean intensity per label background 0.14, RV 0.35, myocardium 0.19, LV 0.43; LV radius at mid-ventricle
# (end-diastole) ~18 px of 256; slice 0 is basal, the last slice apical (the RV ends before the LV apex); the
# first labelled frame is end-diastole in every patient (largest LV). Labels: 0 background, 1 RV, 2 myocardium, 3 LV.
ACDC_PHANTOM_GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
# Per group: ED LV radius and wall thickness (px at 256 px in-plane), LV and RV ejection fractions, RV size factor.
_ACDC_GROUP_SHAPE = {
    "NOR": dict(r_lv=18.0, wall=8.0, ef_lv=0.62, ef_rv=0.55, rv=1.0),
    "DCM": dict(r_lv=25.0, wall=6.0, ef_lv=0.20, ef_rv=0.40, rv=1.0),
    "HCM": dict(r_lv=15.0, wall=13.0, ef_lv=0.72, ef_rv=0.60, rv=0.9),
    "MINF": dict(r_lv=22.0, wall=7.5, ef_lv=0.30, ef_rv=0.45, rv=1.0),
    "RV": dict(r_lv=16.0, wall=8.0, ef_lv=0.55, ef_rv=0.30, rv=1.5),
}
# Raw cine (bSSFP) contrasts before the per-volume min-max: blood bright, myocardium dark, fat brightest.
_ACDC_RAW = {"lv": 1.0, "rv": 0.85, "myocardium": 0.42, "tissue": 0.4, "lung": 0.07, "fat": 2.2}


def make_acdc_like_patient(
    rng: np.random.Generator, group: str = "NOR", in_plane: int = 96, n_slices: int = 6
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Draw the two labelled frames of one cine short-axis stack: ``{"ED": (image, label), "ES": (image, label)}``.

    Images are float32 (H, W, D) min-max normalised to [0, 1] per volume (as the real re-export), labels uint8
    with the ACDC values. Why: a 2-D cardiac synthesis bundle (FQCDM) needs labelled ACDC-like slices on machines
    without the real data; the anatomy is shared by both frames, only the contraction differs (ED: larger LV and
    RV cavities, thinner wall; the myocardial area of each slice is kept, as the muscle does not change volume).
    """
    if group not in _ACDC_GROUP_SHAPE:
        raise ValueError(f"group must be one of {ACDC_PHANTOM_GROUPS}, got {group!r}")
    H = W = int(in_plane)
    D = int(n_slices)
    s = (
        in_plane / 200.0
    )  # the heart fills a little more of the field of view than in the 256-px frames (a centred crop)
    g = _ACDC_GROUP_SHAPE[group]
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    cy, cx = H / 2 + rng.uniform(-5, 5) * s, W / 2 + rng.uniform(-5, 5) * s
    r_ed = g["r_lv"] * rng.uniform(0.9, 1.1) * s
    wall_ed = max(g["wall"] * rng.uniform(0.9, 1.1) * s, 2.0)
    ef_lv = float(np.clip(g["ef_lv"] + rng.normal(0, 0.04), 0.1, 0.85))
    ef_rv = float(np.clip(g["ef_rv"] + rng.normal(0, 0.04), 0.1, 0.8))
    ecc, rot = rng.uniform(0.0, 0.1), rng.uniform(0, np.pi)
    harm = rng.uniform(0.03, 0.08), rng.uniform(0, 2 * np.pi)
    dy, dx = yy - cy, xx - cx
    phi, dist = np.arctan2(dy, dx), np.hypot(dy, dx)
    shape_f = 1 + ecc * np.cos(2 * (phi - rot)) + harm[0] * np.cos(3 * (phi - harm[1]))
    wall_f = np.ones_like(phi)
    if group == "MINF":  # a thinned, akinetic scar sector
        centre, half = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(35, 70))
        wall_f = 1 - 0.4 * np.clip(1 - np.abs(_wrap(phi - centre)) / half, 0, 1)
    z = np.arange(D) / max(D - 1, 1)  # 0 base -> 1 apex
    taper = 1 - 0.6 * z**1.5
    a = rng.uniform(0.8, 1.2) * np.pi  # RV on the septal side, as in the real stacks
    rv_size = g["rv"] * rng.uniform(0.9, 1.1)
    rv_slices = max(D - 1, 1) if D > 2 else D  # the RV ends one slice above the LV apex

    # Background shared by both frames: textured body, lungs, bright subcutaneous fat, descending aorta.
    tex = _smooth_noise(rng, (H, W), 5 * s + 1) + 0.6 * _smooth_noise(rng, (H, W), 1.5)
    by, bx = H / 2 + rng.uniform(0, 8) * s, W / 2 + rng.uniform(-8, 8) * s
    ry, rx = rng.uniform(0.55, 0.62) * H, rng.uniform(0.62, 0.7) * W
    rb = np.hypot((yy - by) / ry, (xx - bx) / rx)
    raw_bg = _ACDC_RAW["tissue"] * rng.uniform(0.85, 1.15) * (1 + 0.45 * tex)
    raw_bg[(rb > 0.9) & (rb < 1)] = _ACDC_RAW["fat"] * rng.uniform(0.9, 1.05)
    lungs = np.zeros((H, W), bool)
    for side in (-1, 1):
        lungs |= np.hypot((yy - by + 0.08 * H) / (0.24 * H), (xx - bx - side * 0.4 * W) / (0.11 * W)) < 1
    raw_bg[lungs] = _ACDC_RAW["lung"] * (1 + 0.5 * tex[lungs])
    ay, ax = cy + 1.9 * (r_ed + wall_ed), cx + rng.uniform(-0.5, 0.5) * (r_ed + wall_ed)
    raw_bg[np.hypot(yy - ay, xx - ax) < 5.5 * s + 1] = _ACDC_RAW["lv"] * 0.95
    raw_bg[rb >= 1] = 0.0
    contrast = {k: _ACDC_RAW[k] * rng.uniform(0.92, 1.08) for k in ("lv", "rv", "myocardium")}
    bias = 1 + 0.1 * (
        rng.uniform(-1, 1) * (yy - H / 2) / H
        + rng.uniform(-1, 1) * (xx - W / 2) / W
        + _smooth_noise(rng, (H, W), H / 6)
    )
    sigma = rng.uniform(0.02, 0.04)

    frames = {}
    for phase, ef_l, ef_r in (("ED", 0.0, 0.0), ("ES", ef_lv, ef_rv)):
        r_endo_ed = (r_ed * shape_f)[..., None] * taper
        r_epi_ed = r_endo_ed + np.maximum((wall_ed * wall_f)[..., None] * (0.85 + 0.15 * taper), 1.5)
        r_endo = np.maximum(r_endo_ed * np.sqrt(1 - ef_l), 1.5)
        r_epi = np.sqrt(r_endo**2 + r_epi_ed**2 - r_endo_ed**2)  # myocardial area kept -> the wall thickens
        lv = dist[..., None] < r_endo
        myo = ~lv & (dist[..., None] < r_epi)
        # RV: crescent wrapping the septum; the part of an ellipse outside the epicardium.
        # An ellipse centred half-way out to the septum, reaching ``depth`` beyond the epicardium and wider than the LV.
        r_out = (r_ed + wall_ed) * taper * np.sqrt(1 - 0.5 * ef_l)
        depth = 0.55 * rv_size * (r_ed + wall_ed) * taper * np.sqrt(1 - ef_r)
        width = 1.25 * np.sqrt(rv_size) * r_out
        rcy, rcx = cy + np.sin(a) * 0.5 * r_out, cx + np.cos(a) * 0.5 * r_out
        ry_, rx_ = yy[..., None] - rcy, xx[..., None] - rcx
        u = ry_ * np.sin(a) + rx_ * np.cos(a)  # along the LV -> RV axis
        v = ry_ * np.cos(a) - rx_ * np.sin(a)
        rv = ((u / (0.5 * r_out + depth)) ** 2 + (v / width) ** 2 < 1) & ~lv & ~myo
        rv[..., rv_slices:] = False
        label = np.zeros((H, W, D), np.uint8)
        label[rv], label[myo], label[lv] = 1, 2, 3

        img = np.broadcast_to(raw_bg[..., None], (H, W, D)).copy()
        img[rv], img[myo], img[lv] = contrast["rv"], contrast["myocardium"], contrast["lv"]
        img[myo] *= 1 + 0.08 * np.broadcast_to(tex[..., None], (H, W, D))[myo]
        img = ndi.gaussian_filter(img, (0.6, 0.6, 0)) * bias[..., None]  # partial volume, coil bias
        img = np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))  # Rician magnitude
        img = (img - img.min()) / (img.max() - img.min())
        frames[phase] = (img.astype(np.float32), label)
    return frames


def generate_acdc_like_dataset(
    out_dir, n_patients: int = 4, seed: int = 0, in_plane: int = 96, n_slices: int = 6
) -> list[str]:
    """Write an ACDC-layout synthetic dataset to ``out_dir``; returns the sorted patient ids.

    ``patientXXX/patientXXX_frame01.nii.gz`` (end-diastole) and ``patientXXX_frameYY.nii.gz`` (end-systole, YY drawn
    per patient as in the original data) with ``_gt`` labels, and an ``Info.cfg`` with ``ED``, ``ES``, ``Group`` and
    ``NbFrame`` lines. Groups cycle NOR, DCM, HCM, MINF, RV. Same arguments give byte-identical files; a patient
    depends only on (seed, its id); existing identical files are kept, differing ones raise ``FileExistsError``.
    """
    out = Path(out_dir)
    ids = [f"patient{i:03d}" for i in range(1, int(n_patients) + 1)]
    for index, pid in enumerate(ids):
        group = ACDC_PHANTOM_GROUPS[index % len(ACDC_PHANTOM_GROUPS)]
        rng = case_rng(seed, pid)
        es, nb_frames = int(rng.integers(9, 16)), int(rng.integers(25, 31))
        frames = make_acdc_like_patient(rng, group, in_plane, n_slices)
        for phase, number in (("ED", 1), ("ES", es)):
            image, label = frames[phase]
            _write_once(out / pid / f"{pid}_frame{number:02d}.nii.gz", _nifti_bytes(image))
            _write_once(out / pid / f"{pid}_frame{number:02d}_gt.nii.gz", _nifti_bytes(label))
        _write_once(out / pid / "Info.cfg", f"ED: 1\nES: {es}\nGroup: {group}\nNbFrame: {nb_frames}\n".encode())
    readme = (
        "SYNTHETIC DATA - not real patients.\n"
        "ACDC-like cine short-axis cardiac MRI phantoms made by pathosynth.data.phantom.generate_acdc_like_dataset\n"
        f"(seed={seed}, n_patients={n_patients}, in_plane={in_plane}, n_slices={n_slices}).\n"
        "Each patient is drawn procedurally from numpy SeedSequence([seed, *patient_id]); layout and labels\n"
        "follow ACDC: 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity; frame01 is end-diastole.\n"
    )
    _write_once(out / "README.txt", readme.encode())
    return ids
