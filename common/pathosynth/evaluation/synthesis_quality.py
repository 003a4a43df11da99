"""Whole-image quality of label-guided synthesis against the real images of the same label maps (FQCDM Tab. 1–3).

The synthetic case of a real label map is compared with that label map's real image, slice by slice, inside the
in-plane field of view the model synthesised (the centred ``fov_size`` box; outside it the synthetic volume holds
only the fill value). Conventions, chosen to follow the paper where it is explicit:

- **PSNR** (Eq. 18) and **MS-SSIM** (Eq. 19–22) per slice on the real volume's [min, max] (MAX = that range),
  via :func:`pathosynth.metrics.image.image_similarity`; the table gives the mean ± std over all slices of all cases
  (the paper averages over images). MS-SSIM needs >= 176 px in-plane, so ``fov_size`` must be at least that.
- **FID** (Eq. 23) between the set of synthetic slices and the set of the real slices they were made for, in the
  embedding of a named extractor (default ``random-conv``: weight-free, fixed seed — the paper's Inception
  network needs downloaded ImageNet weights). Scores from different extractors or set sizes are not comparable;
  the extractor's name is written next to every FID.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.layouts import read_datalist
from ..io.atomic import atomic_path, write_json
from ..io.nifti import read_nifti
from ..markdown_tables import fixed, markdown_table, spread_cell
from ..metrics.distribution import distribution_scores
from ..metrics.extractors import make_extractor
from ..metrics.image import image_similarity

__all__ = ["centred_box", "paired_slices", "synthesis_quality", "synthesis_quality_report"]


def centred_box(shape: Sequence[int], fov_size: Sequence[int]) -> tuple[slice, slice]:
    """The in-plane box of ``fov_size`` centred as MONAI's centre crop/pad centres it (clipped to the image)."""
    box = []
    for size, fov in zip(shape[:2], fov_size):
        fov = min(int(fov), int(size))
        start = (int(size) - fov) // 2
        box.append(slice(start, start + fov))
    return box[0], box[1]


def paired_slices(datalist: str | os.PathLike, fov_size: Sequence[int]):
    """Yield ``(case_id, slice index, synthetic, real, label, (low, high))`` for every slice of every synthetic case:
    the fov box of both volumes and of the label map, and the real volume's intensity range. Entries need
    ``source_image`` (the real image)."""
    entries = json.loads(Path(datalist).read_text())["training"]
    for entry, record in zip(entries, read_datalist(datalist)):
        if not entry.get("source_image"):
            raise ValueError(f"datalist {datalist}: entry {record['case_id']} has no source_image to compare with")
        source = Path(entry["source_image"])
        source = source if source.is_absolute() else Path(datalist).resolve().parent / source
        synthetic = np.asarray(read_nifti(record["image"])[0], dtype=np.float64)
        real = np.asarray(read_nifti(source)[0], dtype=np.float64)
        label = np.asarray(read_nifti(record["label"])[0])
        if synthetic.shape != real.shape:
            raise ValueError(
                f"datalist {datalist}: {record['image']} has shape {synthetic.shape}, its source {source} {real.shape}"
            )
        rows, cols = centred_box(real.shape, fov_size)
        low, high = float(real.min()), float(real.max())
        for k in range(real.shape[2] if real.ndim == 3 else 1):
            take = (lambda v: v[rows, cols, k]) if real.ndim == 3 else (lambda v: v[rows, cols])
            yield record["case_id"], k, take(synthetic), take(real), take(label), (low, high)


def synthesis_quality(
    datalist: str | os.PathLike,
    fov_size: Sequence[int],
    extractor: str = "random-conv",
    extractor_weights: str | None = None,
    labels: Mapping[str, int] | None = None,
) -> dict:
    """PSNR, MS-SSIM (per slice; mean, std, n) and FID (slice sets) of one method's synthetic datalist; with
    ``labels``, also the mean intensity (on the real range, 0..1) inside each label class of the synthetic and of
    the real images -- whether the image follows its label map (e.g. bright LV cavity, dark myocardium)."""
    psnr, ms_ssim, synthetic_set, real_set = [], [], [], []
    sums = {name: np.zeros(3) for name in (labels or {})}  # synthetic sum, real sum, voxels
    for _, _, synthetic, real, label, data_range in paired_slices(datalist, fov_size):
        if data_range[1] <= data_range[0]:
            continue  # an empty slice range has no scale to judge on
        scores = image_similarity(synthetic, real, data_range, spatial_dims=2, metrics=("psnr", "ms_ssim"))
        psnr.append(scores["psnr"])
        ms_ssim.append(scores["ms_ssim"])
        synthetic_set.append(
            np.clip((synthetic - data_range[0]) / (data_range[1] - data_range[0]), 0, 1).astype(np.float32)
        )
        real_set.append(((real - data_range[0]) / (data_range[1] - data_range[0])).astype(np.float32))
        for name, value in (labels or {}).items():
            inside = label == value
            sums[name] += (synthetic_set[-1][inside].sum(), real_set[-1][inside].sum(), inside.sum())
    if not psnr:
        raise ValueError(f"datalist {datalist}: no slice to evaluate")
    summary = {}
    for name, values in (("psnr", psnr), ("ms_ssim", ms_ssim)):
        finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
        summary[name] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "n": int(finite.size),
        }
    side = min(min(s.shape) for s in real_set)
    resize = lambda images: [_resize(i, side) for i in images]  # noqa: E731 -- FID needs one slice size
    summary["fid"] = distribution_scores(
        resize(synthetic_set),
        resize(real_set),
        make_extractor(extractor, weights_path=extractor_weights),
        kid_subset_size=100,
    )
    summary["class_intensity"] = {name: {"synthetic": s / n, "real": r / n} for name, (s, r, n) in sums.items() if n}
    summary["datalist"] = str(datalist)
    return summary


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if image.shape == (side, side):
        return image
    return F.interpolate(torch.from_numpy(image)[None, None], size=(side, side), mode="area")[0, 0].numpy()


def first_real(results: Mapping[str, dict], name: str) -> float:
    """The real images' mean intensity in a class (the same real slices for every method)."""
    return next(r["class_intensity"][name]["real"] for r in results.values() if name in r["class_intensity"])


def synthesis_quality_markdown(
    results: Mapping[str, Mapping], fov_size: Sequence[int], classes: Sequence[str] = ()
) -> str:
    """The Tab. 1–3 table (and, for ``classes``, the per-class mean intensity table) of :func:`synthesis_quality_report`
    from its per-method results (as computed or read back from JSON)."""
    first = next(iter(results.values()))["fid"]
    rows = [
        f"Per slice inside the centred {fov_size[0]}×{fov_size[1]} field of view; mean ± std over slices. "
        f"FID between the synthetic and the real slice sets (n = {first['n_a']} each) in the `{first['extractor']}` "
        "embedding (not comparable with Inception FIDs).",
        "",
        *markdown_table(
            ("method", "PSNR ↑ (Tab. 1)", "MS-SSIM ×100 ↑ (Tab. 2)", "FID ↓ (Tab. 3)", "slices"),
            (
                (
                    name,
                    spread_cell(r["psnr"]),
                    spread_cell(r["ms_ssim"], scale=100),
                    fixed(r["fid"]["fid"]),
                    r["psnr"]["n"],
                )
                for name, r in results.items()
            ),
        ),
    ]
    classes = [c for c in classes if any(c in r["class_intensity"] for r in results.values())]
    if classes:
        rows += [
            "",
            "Mean intensity inside each label class (0 = the real volume's minimum, 1 = its maximum):",
            "",
            *markdown_table(
                ("images", *classes),
                [
                    ("real", *(fixed(first_real(results, c), 3) for c in classes)),
                    *(
                        (name, *(fixed(r["class_intensity"].get(c, {}).get("synthetic"), 3) for c in classes))
                        for name, r in results.items()
                    ),
                ],
            ),
        ]
    return "\n".join(rows) + "\n"


def synthesis_quality_report(
    methods: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    fov_size: Sequence[int],
    extractor: str = "random-conv",
    extractor_weights: str | None = None,
    title: str = "Synthetic vs real images of the same label maps",
    labels: Mapping[str, int] | None = None,
) -> dict:
    """Tab. 1–3 side by side for methods (name -> synthetic datalist): ``synthesis_quality.md`` and ``.json``; with
    ``labels`` also a table of the mean intensity per label class."""
    results = {
        name: synthesis_quality(datalist, fov_size, extractor, extractor_weights, labels)
        for name, datalist in methods.items()
    }
    rows = [f"# {title}", "", synthesis_quality_markdown(results, fov_size, list(labels or {}))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "synthesis_quality.md") as tmp:
        tmp.write_text("\n".join(rows))
    write_json(out / "synthesis_quality.json", {"fov_size": list(fov_size), "methods": results})
    return results
