"""How realistic are generated lesion masks? Per-case shape statistics and a real-vs-generated report.

Why: a mask generator (DiffMask, hand-crafted sectors, ...) can produce masks that look fine on one slice yet
are implausible as a population -- too large, never transmural, fragmented, or with no-reflow cores touching
healthy myocardium. Comparing the distributions of a few clinically meaningful numbers with those of real
EMIDEC masks makes that visible ("lesion volume fraction of myocardium, transmurality, number of connected
components, PMO-inside-MI rate -- side by side, as numbers and a plot").

Definitions (per case, on a label map; M_m, MI extent, the PMO rule and the connectivity are those of
:mod:`pathosynth.masks.postprocess`):

- ``lesion_fraction`` = |MI extent| / |M_m| (NaN when the case has no M_m).
- ``transmurality``: on every slice with lesion, the in-plane centroid of the LV (cavity ∪ M_m; M_m alone when
  the labels declare no cavity class) is the centre; M_m voxels are binned into angular sectors of
  ``sector_degrees`` (10°), the angle measured from the +axis-1 direction towards +axis-0, sector k holding
  angles in [k·10°, (k+1)·10°). For every sector that contains lesion, lesion voxels / M_m voxels in that
  sector; transmurality is the mean over all lesion sectors of all slices (1 = every lesion spans the whole
  wall, ~0.3 = thin subendocardial lesions). A voxel-count proxy of the wall-thickness fraction the EMIDEC and
  AHA literature scores by segment. NaN without lesion.
- ``components``: connected components of the MI extent (in-plane 8-neighbours + same position on adjacent
  slices).
- ``mi_slices``: number of slices holding lesion.
- ``pmo_present``: any PMO voxel. ``pmo_inside_mi``: fraction of PMO voxels satisfying the "PMO inside MI" rule
  (NaN without PMO). ``pmo_fraction`` = |PMO| / |MI extent| (0 when there is lesion but no PMO, NaN without
  lesion).

Cases without lesion are counted ("no lesion: n") and left out of the lesion statistics.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.labels import EMIDEC_LABELS
from ..io.atomic import atomic_path
from ..markdown_tables import DASH, markdown_table
from .postprocess import label_components, label_to_masks, pmo_inside_mi_voxels

__all__ = ["DISTRIBUTIONS", "mask_statistics", "realism_report", "render_mask_realism", "summarise", "transmurality"]

# statistic -> (table label, description); distributions are summarised over cases with lesion
DISTRIBUTIONS = {
    "lesion_fraction": ("lesion fraction of M_m", "|MI ∪ PMO| / |myocardium ∪ MI ∪ PMO|"),
    "transmurality": ("transmurality", "mean over 10° sectors with lesion of lesion / M_m voxels in the sector"),
    "components": (
        "connected components",
        "components of MI ∪ PMO (in-plane 8-neighbours + same position on adjacent slices)",
    ),
    "mi_slices": ("slices with lesion", "number of slices holding MI ∪ PMO"),
    "pmo_fraction": ("PMO share of infarct", "|PMO| / |MI ∪ PMO|"),
    "pmo_inside_mi": (
        "PMO inside MI, per case",
        "fraction of a case's PMO voxels with no healthy-myocardium 4-neighbour (cases with PMO)",
    ),
}


def transmurality(
    mi_extent: np.ndarray, region: np.ndarray, centre_mask: np.ndarray | None = None, sector_degrees: float = 10.0
) -> float:
    """Mean lesion share of M_m over the angular sectors holding lesion (see the module docstring); NaN without lesion.

    ``centre_mask`` (default ``region``) defines the per-slice centre as its in-plane centroid.
    """
    mi_extent, region = np.asarray(mi_extent, bool), np.asarray(region, bool)
    centre_mask = region if centre_mask is None else np.asarray(centre_mask, bool) | region
    n_sectors = int(math.ceil(360.0 / float(sector_degrees)))
    shares: list[np.ndarray] = []
    for z in np.flatnonzero((mi_extent & region).any(axis=(0, 1))):
        centre = np.argwhere(centre_mask[..., z]).mean(axis=0)
        rows, cols = np.nonzero(region[..., z])
        angle = np.degrees(np.arctan2(rows - centre[0], cols - centre[1])) % 360.0
        sector = np.minimum((angle // float(sector_degrees)).astype(int), n_sectors - 1)
        wall = np.bincount(sector, minlength=n_sectors)
        lesion = np.bincount(sector, weights=mi_extent[rows, cols, z], minlength=n_sectors)
        hit = lesion > 0
        shares.append(lesion[hit] / wall[hit])
    return float(np.concatenate(shares).mean()) if shares else float("nan")


def mask_statistics(
    label: np.ndarray,
    labels: Mapping[str, int] | None = None,
    anatomy_class: str = "myocardium",
    mi_class: str = "MI",
    pmo_class: str = "PMO",
    cavity_class: str | None = "LV",
    sector_degrees: float = 10.0,
) -> dict:
    """Realism statistics of one (H, W, D) label map (definitions in the module docstring).

    Besides the statistics, the voxel counts behind them are returned (``lesion_voxels``, ``region_voxels``,
    ``pmo_voxels``, ``pmo_inside_voxels``) so groups can be pooled.
    """
    labels = EMIDEC_LABELS if labels is None else labels
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label must be a 3-D (H, W, D) label map, got shape {label.shape}")
    mi, pmo, region = label_to_masks(label, labels, anatomy_class, mi_class, pmo_class)
    cavity = label == int(labels[cavity_class]) if cavity_class is not None and cavity_class in labels else None
    n_region, n_lesion, n_pmo = int(region.sum()), int(mi.sum()), int(pmo.sum())
    n_inside = int(pmo_inside_mi_voxels(mi, pmo, region).sum())
    nan = float("nan")
    return {
        "lesion": n_lesion > 0,
        "lesion_fraction": n_lesion / n_region if n_region else nan,
        "transmurality": transmurality(mi, region, cavity, sector_degrees),
        "components": int(label_components(mi)[1]),
        "mi_slices": int(mi.any(axis=(0, 1)).sum()),
        "pmo_present": n_pmo > 0,
        "pmo_inside_mi": n_inside / n_pmo if n_pmo else nan,
        "pmo_fraction": n_pmo / n_lesion if n_lesion else nan,
        "lesion_voxels": n_lesion,
        "region_voxels": n_region,
        "pmo_voxels": n_pmo,
        "pmo_inside_voxels": n_inside,
    }


def _describe(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def summarise(cases: Sequence[dict]) -> dict:
    """Group summary of per-case statistics: counts, distributions over cases with lesion, rates."""
    lesion_cases = [c for c in cases if c["lesion"]]
    total_pmo = sum(c["pmo_voxels"] for c in lesion_cases)
    summary = {
        "n_cases": len(cases),
        "n_no_lesion": len(cases) - len(lesion_cases),
        "n_lesion": len(lesion_cases),
        "pmo_present_rate": (sum(c["pmo_present"] for c in lesion_cases) / len(lesion_cases)) if lesion_cases else None,
        "pmo_inside_mi_rate": (sum(c["pmo_inside_voxels"] for c in lesion_cases) / total_pmo) if total_pmo else None,
        "pmo_voxels": int(total_pmo),
    }
    for name in DISTRIBUTIONS:
        summary[name] = _describe([c[name] for c in lesion_cases])
    return summary


def _load(item, group: str, index: int) -> tuple[str, np.ndarray]:
    if isinstance(item, (str, os.PathLike)):
        from ..io.nifti import read_nifti

        name = Path(item).name
        for suffix in (".nii.gz", ".nii"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        return name, np.asarray(read_nifti(item)[0])
    return f"{group}#{index}", np.asarray(item)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _fmt(x: float | None) -> str:
    return DASH if x is None else f"{x:.3g}"


def _markdown(title: str, summaries: Mapping[str, dict]) -> str:
    names = list(summaries)
    rows = [
        ("cases", [str(s["n_cases"]) for s in summaries.values()]),
        ("no lesion: n (excluded below)", [str(s["n_no_lesion"]) for s in summaries.values()]),
    ]
    for key, (text, _) in DISTRIBUTIONS.items():
        cells = []
        for s in summaries.values():
            d = s[key]
            cells.append("–" if d["n"] == 0 else f"{_fmt(d['median'])} [{_fmt(d['q1'])}–{_fmt(d['q3'])}]")
        rows.append((f"{text}, median [IQR]", cells))
    pct = lambda r: "–" if r is None else f"{100 * r:.1f} %"  # noqa: E731
    rows.append(("PMO present (cases with lesion)", [pct(s["pmo_present_rate"]) for s in summaries.values()]))
    rows.append(("PMO inside MI (pooled PMO voxels)", [pct(s["pmo_inside_mi_rate"]) for s in summaries.values()]))
    lines = [f"# {title}", "", *markdown_table(("statistic", *names), ((label, *cells) for label, cells in rows))]
    lines += ["", "Definitions (pathosynth.masks.realism):", ""]
    lines += [f"- **{text}**: {desc}" for text, desc in DISTRIBUTIONS.values()]
    lines += ["- **PMO inside MI**: a PMO voxel none of whose in-plane 4-neighbours is healthy myocardium", ""]
    return "\n".join(lines)


def render_mask_realism(results: Mapping) -> str:
    """``mask_realism.md`` from ``mask_realism.json`` alone."""
    return _markdown(results["title"], {group: content["summary"] for group, content in results["groups"].items()})


def _plot(path: Path, title: str, per_group: Mapping[str, list[dict]], summaries: Mapping[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_group)
    keys = list(DISTRIBUTIONS)
    fig, axes = plt.subplots(2, 4, figsize=(4.0 * 4, 3.4 * 2), squeeze=False)
    axes = axes.ravel()
    rng = np.random.default_rng(0)  # jitter only; fixed so equal inputs give equal images
    colours = plt.get_cmap("tab10").colors
    for axis, key in zip(axes, keys):
        data = [np.asarray([c[key] for c in per_group[g] if c["lesion"] and np.isfinite(c[key])], float) for g in names]
        positions = [i for i, d in enumerate(data) if d.size]
        if positions:
            axis.boxplot([data[i] for i in positions], positions=positions, widths=0.5, showfliers=False)
        for i, d in enumerate(data):
            axis.scatter(i + rng.uniform(-0.15, 0.15, d.size), d, s=10, alpha=0.6, color=colours[i % len(colours)])
        axis.set_xticks(
            range(len(names)),
            [f"{g}\n(n={summaries[g][key]['n']})" for g in names],
            fontsize=7,
            rotation=20,
            ha="right",
        )
        axis.set_xlim(-0.6, len(names) - 0.4)
        axis.set_title(DISTRIBUTIONS[key][0], fontsize=9)
    rate_axis = axes[len(keys)]
    width = 0.8 / max(len(names), 1)
    for i, g in enumerate(names):
        rates = [summaries[g]["pmo_present_rate"], summaries[g]["pmo_inside_mi_rate"]]
        rate_axis.bar(
            np.arange(2) + (i - (len(names) - 1) / 2) * width,
            [100 * (r or 0) for r in rates],
            width,
            label=g,
            color=colours[i % len(colours)],
        )
    rate_axis.set_xticks(range(2), ["PMO present\n(cases)", "PMO inside MI\n(voxels)"], fontsize=7)
    rate_axis.set_ylim(0, 105)
    rate_axis.set_ylabel("%")
    rate_axis.legend(fontsize=7)
    rate_axis.set_title("rates", fontsize=9)
    count_axis = axes[len(keys) + 1]
    count_axis.axis("off")
    count_axis.text(
        0,
        1,
        "\n".join(f"{g}: {summaries[g]['n_cases']} cases, no lesion: {summaries[g]['n_no_lesion']}" for g in names),
        va="top",
        fontsize=8,
        transform=count_axis.transAxes,
    )
    for axis in axes[len(keys) + 2 :]:
        axis.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def realism_report(
    groups: Mapping[str, Sequence[np.ndarray | str | os.PathLike]],
    labels: Mapping[str, int] | None,
    out_dir: str | os.PathLike,
    title: str = "Lesion mask realism",
    **statistics_kwargs,
) -> dict:
    """Compare lesion masks of several groups (e.g. "real EMIDEC", "DiffMask", "hand-crafted").

    ``groups`` maps a name to label maps (arrays) or NIfTI label paths. Writes, each atomically:
    ``mask_realism.json`` (per-case values, per-group summaries, definitions), ``mask_realism.md`` (one row per
    statistic, one column per group: "median [IQR]", rates as %) and ``mask_realism.png`` (one panel per
    statistic, all groups side by side as box plots with the cases as points). Returns
    ``{group: summary}`` (see :func:`summarise`). Extra keyword arguments go to :func:`mask_statistics`.
    """
    if not groups:
        raise ValueError("realism_report needs at least one group of label maps")
    labels = EMIDEC_LABELS if labels is None else labels
    out_dir = Path(out_dir)
    per_group: dict[str, list[dict]] = {}
    for group, items in groups.items():
        per_group[group] = []
        for index, item in enumerate(items):
            case, label = _load(item, group, index)
            per_group[group].append({"case": case, **mask_statistics(label, labels, **statistics_kwargs)})
    summaries = {group: summarise(cases) for group, cases in per_group.items()}
    with atomic_path(out_dir / "mask_realism.json") as tmp:  # key order kept: it is the order of the report's columns
        tmp.write_text(
            json.dumps(
                _json_safe(
                    {
                        "study": "mask_realism",
                        "title": title,
                        "labels": dict(labels),
                        "definitions": {k: d for k, (_, d) in DISTRIBUTIONS.items()},
                        "groups": {g: {"summary": summaries[g], "cases": per_group[g]} for g in per_group},
                    }
                ),
                indent=2,
            )
            + "\n"
        )
    with atomic_path(out_dir / "mask_realism.md") as tmp:
        tmp.write_text(_markdown(title, _json_safe(summaries)))  # as render_mask_realism reads it back from the JSON
    _plot(out_dir / "mask_realism.png", title, per_group, summaries)
    return _json_safe(summaries)
