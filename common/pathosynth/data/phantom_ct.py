"""Deterministic procedural chest-CT phantoms with lung nodules, in Hounsfield units.

Why: the official LeFusion code also synthesises lung nodules on CT (LIDC-IDRI), where intensities are absolute (HU)
and the normalisation is a fixed window (``intensity: "window"``) instead of MRI's per-volume min-max. Tests and a
CT user's first run need labelled CT without shipping real scans. Each case is a body ellipse of soft tissue (~40 HU)
in air (-1000 HU) holding two lungs of parenchyma (~-850 HU) with a few vessels (~-100 HU), and one to three solid
nodules (0..100 HU, label 1) inside the lungs, with partial-volume blur and noise; voxels are 0.7 x 0.7 x 2.5 mm
(thin in-plane, thicker slices, as in chest CT). No real data is contained here.

Cases are written with a decathlon-style ``dataset.json`` that carries its own ``labels`` ({"background": 0,
"nodule": 1}), so ``load_cases(datalist=...)`` checks a config's labels against the data's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .phantom import _nifti_bytes, _smooth_noise, _write_once, case_rng

CT_LABELS = {"background": 0, "nodule": 1}
CT_AFFINE = np.diag([0.7, 0.7, 2.5, 1.0])  # mm: LIDC-like in-plane spacing, thicker slices


def make_ct_nodule_case(
    rng: np.random.Generator, in_plane: int = 64, num_slices: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one chest-CT volume; returns (image int16 HU (H, W, D), label uint8 (H, W, D), 1 = nodule)."""
    H = W = int(in_plane)
    D = int(num_slices)
    yy, xx, zz = np.mgrid[0:H, 0:W, 0:D].astype(float)
    body = np.hypot((yy - H / 2) / (0.46 * H), (xx - W / 2) / (0.49 * W)) < 1
    image = np.full((H, W, D), -1000.0)
    image[body] = rng.normal(40, 5) + 15 * _smooth_noise(rng, (H, W, D), (3, 3, 1))[body]
    lungs = np.zeros((H, W, D), bool)
    centres = []
    for side in (-1, 1):
        cy, cx = H / 2 + rng.uniform(-2, 2), W / 2 + side * rng.uniform(0.2, 0.24) * W
        ry, rx = rng.uniform(0.3, 0.36) * H, rng.uniform(0.15, 0.18) * W
        lungs |= np.hypot((yy - cy) / ry, (xx - cx) / rx) < 1
        centres.append((cy, cx, ry, rx))
    image[lungs] = rng.normal(-850, 15) + 40 * _smooth_noise(rng, (H, W, D), (2, 2, 1))[lungs]
    vessels = lungs & (_smooth_noise(rng, (H, W, D), (1.5, 1.5, 1.0)) > 0.55)
    image[vessels] = -100.0
    label = np.zeros((H, W, D), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, ry, rx = centres[int(rng.integers(0, 2))]
        radius = rng.uniform(3.5, 5.5)  # voxels in-plane; slices are 2.5 mm, so ~1/3 as many through-plane
        oy, ox = rng.uniform(-0.5, 0.5) * (ry - radius), rng.uniform(-0.5, 0.5) * (rx - radius)
        oz = rng.uniform(radius / 3.6 + 1, D - radius / 3.6 - 2)
        dist = np.hypot(np.hypot(yy - cy - oy, xx - cx - ox), (zz - oz) * 3.6)  # 2.5 mm / 0.7 mm
        nodule = (dist < radius * (1 + 0.15 * _smooth_noise(rng, (H, W, D), 1.5))) & lungs
        image[nodule] = rng.uniform(0, 100) + 20 * _smooth_noise(rng, (H, W, D), 1.0)[nodule]
        label[nodule] = 1
    image = ndi.gaussian_filter(image, (0.5, 0.5, 0.2)) + rng.normal(0, 12, image.shape)  # partial volume, noise
    image[~body] = np.minimum(image[~body], -950)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label


def generate_ct_nodule_dataset(
    out_dir, n_cases: int = 6, seed: int = 0, in_plane: int = 64, num_slices: int = 16
) -> list[str]:
    """Write ``Nodule_XXX/{image,label}.nii.gz`` and ``dataset.json`` (training list + labels) to ``out_dir``; returns
    the case ids. Same arguments give byte-identical files; differing existing files raise ``FileExistsError``."""
    out = Path(out_dir)
    ids = [f"Nodule_{i:03d}" for i in range(1, int(n_cases) + 1)]
    entries = []
    for cid in ids:
        image, label = make_ct_nodule_case(case_rng(seed, cid), in_plane, num_slices)
        if not label.any():  # a nodule wholly blurred out of the lungs: never expected, never silently written
            raise RuntimeError(f"phantom case {cid} has no nodule voxel")
        _write_once(out / cid / "image.nii.gz", _nifti_bytes(image, CT_AFFINE))
        _write_once(out / cid / "label.nii.gz", _nifti_bytes(label, CT_AFFINE))
        entries.append({"case_id": cid, "image": f"{cid}/image.nii.gz", "label": f"{cid}/label.nii.gz"})
    datalist = {
        "name": "CT nodule phantom (synthetic, not real patients)",
        "description": f"pathosynth.data.phantom_ct (seed={seed}, in_plane={in_plane}, num_slices={num_slices}); HU",
        "labels": CT_LABELS,
        "training": entries,
    }
    _write_once(out / "dataset.json", (json.dumps(datalist, indent=2) + "\n").encode())
    return ids
