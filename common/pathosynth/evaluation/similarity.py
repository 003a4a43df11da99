"""Image-quality comparison of synthesis methods against the real cases they were made from (LeFusion Tab. 2).

Each synthetic case in a method's datalist carries its ``source_image``; its label map is the real one (P'
synthesis re-textures real masks). PSNR/SSIM are computed per lesion class over that class's voxels on the
real volume's intensity range, plus the background (what inpainting must leave as it was). The report
puts methods side by side, as the paper's table does, with the spread over cases.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.labels import EMIDEC_LABELS
from ..data.layouts import read_datalist
from ..io.atomic import atomic_path, write_json
from ..io.nifti import read_nifti
from ..io.results import finite
from ..markdown_tables import markdown_table, number, spread_cell
from ..metrics.image import lesion_region_similarity
from ..metrics.segmentation import summarise_scores
from .figures import pyplot, save_figure


def synthetic_case_similarity(
    datalist: str | os.PathLike,
    labels: Mapping[str, int] = EMIDEC_LABELS,
    classes: Sequence[str] = ("MI", "PMO"),
    metrics: Sequence[str] = ("psnr", "ssim"),
) -> list[dict]:
    """Per synthetic case of a datalist: ``{"case_id", "source_image", region: {metric: value}}``."""
    import json

    entries = json.loads(Path(datalist).read_text())["training"]
    records = read_datalist(datalist)
    results = []
    for entry, record in zip(entries, records):
        if not entry.get("source_image"):
            raise ValueError(f"datalist {datalist}: entry {record['case_id']} has no source_image to compare with")
        synthetic = np.asarray(read_nifti(record["image"])[0])
        real = np.asarray(read_nifti(entry["source_image"])[0])
        label = np.asarray(read_nifti(record["label"])[0])
        scores = lesion_region_similarity(synthetic, real, label, labels, classes, metrics=metrics)
        results.append({"case_id": record["case_id"], "source_image": entry["source_image"], **scores})
    return results


def _cell(summary: Mapping, region: str, metric: str, scale: float) -> str:
    """Mean ± std over cases; an infinite mean is a PSNR of identical images (a bit-exact background)."""
    stats = summary.get(region, {}).get(metric)
    if stats and stats["n"] and math.isinf(number(stats["mean"])):
        return "∞ (identical)"
    return spread_cell(stats, "n", 2, scale)


def similarity_report(
    methods: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: Mapping[str, int] = EMIDEC_LABELS,
    classes: Sequence[str] = ("MI", "PMO"),
    title: str = "Synthetic vs real: lesion-region similarity",
) -> dict:
    """Compare methods (name -> synthetic datalist): writes ``similarity.md``, ``similarity.json``, ``similarity.png``.

    Table cells are mean ± sample std over cases; SSIM is reported ×100 like the paper's table.
    """
    out = Path(out_dir)
    per_method = {name: synthetic_case_similarity(path, labels, classes) for name, path in methods.items()}
    summaries = {
        name: summarise_scores([{k: v for k, v in case.items() if isinstance(v, dict)} for case in cases])
        for name, cases in per_method.items()
    }
    regions = [*classes, "all lesions", "background"]
    text = f"# {title}\n\n" + similarity_markdown(
        summaries, {name: len(cases) for name, cases in per_method.items()}, classes
    )
    with atomic_path(out / "similarity.md") as tmp:
        tmp.write_text(text)
    write_json(out / "similarity.json", finite({"title": title, "summaries": summaries, "cases": per_method}))
    _plot(out / "similarity.png", title, summaries, regions)
    return summaries


def similarity_markdown(summaries: Mapping[str, Mapping], n_cases: Mapping[str, int], classes: Sequence[str]) -> str:
    """The side-by-side table of :func:`similarity_report` (one row per method, ``n_cases`` cases each) and its note;
    ``summaries`` may be read back from JSON."""
    regions = [*classes, "all lesions", "background"]
    rows = markdown_table(
        ("method", "n", *(f"{r} {metric} ↑" for r in regions for metric in ("PSNR", "SSIM"))),
        (
            (
                name,
                n_cases[name],
                *(_cell(summary, r, m, scale) for r in regions for m, scale in (("psnr", 1), ("ssim", 100))),
            )
            for name, summary in summaries.items()
        ),
    )
    return (
        "\n".join(rows) + "\n\nPSNR in dB on each real volume's intensity range; SSIM ×100, "
        "per-slice 2D windows averaged over the region's voxels; mean ± std over cases.\n"
    )


def _plot(path: Path, title: str, summaries: Mapping, regions: Sequence[str]) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    width = 0.8 / max(1, len(summaries))
    for axis, (metric, scale) in zip(axes, (("psnr", 1), ("ssim", 100))):
        for index, (name, summary) in enumerate(summaries.items()):
            means = [summary.get(r, {}).get(metric, {}).get("mean", math.nan) * scale for r in regions]
            stds = [summary.get(r, {}).get(metric, {}).get("std", math.nan) * scale for r in regions]
            means = [m if math.isfinite(m) else math.nan for m in means]
            x = np.arange(len(regions)) + index * width
            axis.bar(x, means, width, yerr=np.nan_to_num(stds), label=name, capsize=2)
        axis.set_xticks(np.arange(len(regions)) + width * (len(summaries) - 1) / 2, regions, fontsize=8)
        axis.set_title(f"{metric.upper()}{' ×100' if scale == 100 else ' (dB)'}", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=100)
