"""The EMIT-Diff study report: a Tab. 2 analogue (Dice, precision, recall, HD95, ASSD of every augmentation, mean ±
std over the cross-validation folds), per-class tables, the Fig. 5 ablations as a three-panel plot, wall time.

Aggregation, as in the paper's k-fold protocol: per (run, fold, seed) the mean over the fold's test cases gives one
number per class and metric (:func:`.repeats.seed_summary`); seeds of a fold are averaged; the class
mean of a fold averages its classes (those defined on that fold); tables show mean ± sample std over folds. HD95 and
ASSD are in the label files' units (mm for ACDC and EMIDEC); a case where a class is absent from the prediction or the
reference has no surface distance and is left out of that class's mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..evaluation.figures import pyplot, save_figure
from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from ..markdown_tables import markdown_table, spread_cell
from .repeats import repeat_summary, seed_summary
from .results_markdown import provenance_markdown, wall_time_markdown

__all__ = ["METRICS", "fold_summary", "render_emit_diff_report", "write_emit_diff_report"]

# metric key -> (column title, scale in the tables, higher is better)
METRICS: dict[str, tuple[str, float, bool]] = {
    "dice": ("Dice ×100 ↑", 100.0, True),
    "precision": ("Precision ×100 ↑", 100.0, True),
    "recall": ("Recall ×100 ↑", 100.0, True),
    "hd95": ("HD95 (mm) ↓", 1.0, False),
    "assd": ("ASSD (mm) ↓", 1.0, False),
}
ABLATION_PANELS = ("ratio", "alpha", "patch_size")
PANELS = {
    "ratio": ("(a) augmentation ratio n", "synthetic variants per real case (n)", "variants_per_case"),
    "alpha": ("(b) α", "α (probability that a patch is real)", "alpha"),
    "patch_size": ("(c) patch size", "patch size (px)", "patch_size"),
}


def _stats(values: Sequence[float]) -> dict:
    """:func:`.repeats.repeat_summary` over the folds where the value is defined."""
    return repeat_summary([v for v in values if v is not None and math.isfinite(v)], "fold")


def fold_summary(files_per_fold: Sequence[Sequence[Path]], classes: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``{metric: {class or "mean": {"mean", "std", "n_folds", "per_fold"}}}`` over the folds that have scores."""
    result = {}
    for metric in METRICS:
        per_class = {c: [] for c in classes}
        class_mean = []
        for files in files_per_fold:
            if not files:
                continue
            summary = seed_summary(files, metric, classes)
            values = [summary[c]["mean"] for c in classes]
            for c, v in zip(classes, values):
                per_class[c].append(v)
            defined = [v for v in values if math.isfinite(v)]
            class_mean.append(float(np.mean(defined)) if defined else math.nan)
        result[metric] = {**{c: _stats(v) for c, v in per_class.items()}, "mean": _stats(class_mean)}
    return result


def _cell(stats: Mapping, scale: float) -> str:
    """A summary over folds, two decimals."""
    return spread_cell(stats, "n_folds", 2, scale)


def _main_table(rows: Sequence[tuple[str, Mapping]]) -> list[str]:
    return markdown_table(
        ("method", *(title for title, _, _ in METRICS.values()), "folds"),
        (
            (
                label,
                *(_cell(summary[m]["mean"], scale) for m, (_, scale, _) in METRICS.items()),
                summary["dice"]["mean"]["n_folds"],
            )
            for label, summary in rows
        ),
    )


def _class_table(rows: Sequence[tuple[str, Mapping]], metric: str, classes: Sequence[str]) -> list[str]:
    title, scale, _ = METRICS[metric]
    table = markdown_table(
        ("method", *classes), ((label, *(_cell(summary[metric][c], scale) for c in classes)) for label, summary in rows)
    )
    return [f"**{title}**", "", *table]


def _ablation_plot(
    path: Path, study, panels: Mapping[str, list], summaries: Mapping[str, Mapping], baseline: Mapping
) -> None:
    """Fig. 5 analogue: mean Dice (class mean, ×100, mean ± std over the ablation folds) against n, α and patch size;
    the baseline (no synthetic data) as a dashed line, the default EMIT-Diff setting as a filled marker."""
    plt = pyplot()
    shown = [p for p in PANELS if panels.get(p)]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.6 * max(len(shown), 1), 3.0), squeeze=False)
    for axis, panel in zip(axes[0], shown):
        title, xlabel, field = PANELS[panel]
        points = sorted(
            (
                (getattr(run, field), summaries[run.name])
                for run in panels[panel]
                if summaries[run.name]["dice"]["mean"]["n_folds"]
            ),
            key=lambda p: p[0],
        )
        if points:
            x = [p[0] for p in points]
            y = [p[1]["dice"]["mean"]["mean"] * 100 for p in points]
            e = [np.nan_to_num(p[1]["dice"]["mean"]["std"]) * 100 for p in points]
            axis.errorbar(x, y, yerr=e, marker="o", capsize=3, label="EMIT-Diff")
            default = getattr(study.emit_diff, field)
            if default in x:
                axis.plot([default], [y[x.index(default)]], "o", ms=9, mfc="C0", mec="k", label="default")
        if baseline["n_folds"]:
            axis.axhline(baseline["mean"] * 100, color="0.4", ls="--", lw=1, label="baseline")
        if panel == "patch_size":
            axis.set_xscale("log", base=2)
        if points:
            axis.set_xticks(x, [f"{v:g}" for v in x])
            axis.minorticks_off()
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel("mean Dice ×100", fontsize=8)
        axis.tick_params(labelsize=7)
    if shown:
        axes[0][0].legend(fontsize=7)
    else:
        axes[0][0].text(0.5, 0.5, "no ablation runs at this scale", ha="center", va="center", fontsize=9)
        axes[0][0].axis("off")
    save_figure(fig, path)


def _ablation_table(panel: str, runs: Sequence[Mapping], summaries: Mapping[str, Mapping], field: str) -> list[str]:
    return markdown_table(
        (PANELS[panel][1], "mean Dice ×100", "HD95 (mm)", "folds"),
        (
            (
                f"{run[field]:g}",
                _cell(summaries[run["name"]]["dice"]["mean"], 100),
                _cell(summaries[run["name"]]["hd95"]["mean"], 1),
                summaries[run["name"]]["dice"]["mean"]["n_folds"],
            )
            for run in sorted(runs, key=lambda r: r[field])
        ),
    )


def write_emit_diff_report(study, report_dir: str | Path | None = None) -> Path:
    """``emit_diff_study.json`` (every number of the report) and ``emit_diff_study.md`` rendered from it alone
    (:func:`render_emit_diff_report`), + ``ablations.png`` in ``report_dir`` (default ``OUT/report``); every number
    is read from the study folder."""
    out = Path(report_dir or study.out / "report")
    out.mkdir(parents=True, exist_ok=True)
    classes = study.classes
    runs = study.runs()
    all_runs = list(dict.fromkeys(run for panel in runs.values() for run in panel))
    summaries = {
        run.name: fold_summary(
            [study.scores(f, run) if run in study.fold_runs(f) else [] for f in range(study.k)], classes
        )
        for run in all_runs
    }
    # Fig. 5: every point (and the baseline line) on the ablation folds only, so the points are comparable
    ablations = {
        run.name: fold_summary([study.scores(f, run) for f in study.ablation_folds], classes)
        for panel in ABLATION_PANELS
        for run in [runs["tab2"][0], *runs.get(panel, [])]
    }
    _ablation_plot(out / "ablations.png", study, runs, ablations, ablations[runs["tab2"][0].name]["dice"]["mean"])
    trained = next(
        (json.loads(files[0].read_text()) for f in range(study.k) if (files := study.scores(f, runs["tab2"][0]))), {}
    )
    results = as_results(
        {
            "study": "emit_diff_study",
            "scale_name": study.scale.get("name", study.scale_path.stem),
            "provenance": study.provenance("emit_diff_study"),
            "scale": study.scale,
            "folds": json.loads((study.out / "split" / "folds.json").read_text()),
            "k": study.k,
            "classes": classes,
            "ablation_folds": study.ablation_folds,
            "fold_variants": [study.fold_variants(f) for f in range(study.k)],
            "emit_diff": {"name": study.emit_diff.name, **asdict(study.emit_diff)},
            "segmenter": {k: trained.get(k) for k in ("network", "max_steps", "batch_size", "in_plane_size")},
            "runs": {run.name: {"name": run.name, "label": run.label, **asdict(run)} for run in all_runs},
            "panels": {panel: [run.name for run in members] for panel, members in runs.items()},
            "summaries": summaries,
            "ablation_summaries": ablations,
            "timings_s": study.step_timings(),
            "seeds": study.seeds,
            "wall_time": study.wall_time(
                (("generative training", "train_"), ("synthesis", "synth_"), ("segmentation", "segment_")),
                "emit_diff_study.json",
            ),
        }
    )
    write_results(out / "emit_diff_study.json", results)
    with atomic_path(out / "emit_diff_study.md") as tmp:
        tmp.write_text(render_emit_diff_report(results))
    return out / "emit_diff_study.md"


def render_emit_diff_report(results: Mapping) -> str:
    """The generated Markdown of the EMIT-Diff study from its results JSON alone (no discussion)."""
    classes, runs, panels, summaries = results["classes"], results["runs"], results["panels"], results["summaries"]
    ablations, folds, k = results["ablation_summaries"], results["folds"], results["k"]
    tab2 = [(runs[name]["label"], summaries[name]) for name in panels["tab2"]]
    baseline = ablations[panels["tab2"][0]]["dice"]["mean"]
    fold_sizes = ", ".join(f"{len(f['train'])} / {len(f['test'])}" for f in folds["folds"])
    trained, e = results["segmenter"], results["emit_diff"]
    network, n_variants = trained.get("network") or "MONAI AttentionUnet", e["variants_per_case"]
    unit = folds["group_key"] or "case"
    subset = f" (a stratified subset of {folds['max_units']} {unit}s)" if folds.get("max_units") else ""
    variants = ", ".join(f"fold {f}: {n}" for f, n in enumerate(results["fold_variants"]))
    ablation_text = []
    for panel, (_, _, field) in PANELS.items():
        if panels.get(panel):
            ablation_text += [
                f"{PANELS[panel][0]}:",
                "",
                *_ablation_table(panel, [runs[n] for n in panels[panel]], ablations, field),
                "",
            ]
    class_tables = []
    for metric in METRICS:
        class_tables += [*_class_table(tab2, metric, classes), ""]
    return f"""# EMIT-Diff study at {results["scale_name"]} scale

{provenance_markdown(results["provenance"])}

{k}-fold cross-validation by {unit} (stratified by group, seed {folds["seed"]}) over {len(folds["cases"])}
cases{subset}; training / test cases per fold: {fold_sizes}. In every fold the text-conditioned DDPM, the ControlNet
and the synthesis of the variants ({variants} per training case) use that fold's training cases only; every segmenter
is trained on them and scored on the fold's test cases.

Segmenter: {network}, {trained.get("max_steps")} steps of {trained.get("batch_size")} slices
({trained.get("in_plane_size")} px) for every run; seeds {results["seeds"]} per fold. EMIT-Diff = Algorithm 1 with
n = {n_variants}, α = {e["alpha"]:g}, patch size {e["patch_size"]} px; the classic augmentations are the overlays
of `bundles/text_edge_controlnet/configs/augmentation/`.

## Tab. 2 analogue: classic augmentation vs EMIT-Diff

Mean over the classes {", ".join(classes)}; mean ± std over folds of the per-fold mean over test cases.

{chr(10).join(_main_table(tab2))}

Per class (mean ± std over folds):

{chr(10).join(class_tables)}
## Fig. 5 analogue: ablations on fold(s) {results["ablation_folds"]}

EMIT-Diff with one setting varied, the others at the defaults; mean over classes.

![ablations](ablations.png)

{chr(10).join(ablation_text)}
Baseline on the same fold(s): mean Dice ×100 {_cell(baseline, 100)}.

{wall_time_markdown(results["wall_time"])}
"""
