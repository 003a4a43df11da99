"""The LeFusion study report: Tab. 2 and Tab. 1 analogues as Markdown + JSON, bar plots, example panels.

Downstream numbers are aggregated in two stages (:mod:`.repeats`): the mean over test cases gives one number per
(training mix, seed); the table shows the mean ± sample std of those over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..evaluation.figures import image_row, pyplot, save_figure
from ..evaluation.similarity import similarity_markdown, similarity_report
from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from ..markdown_tables import markdown_table, spread_cell
from .repeats import seed_summary
from .results_markdown import example_markdown, provenance_markdown, wall_time_markdown

__all__ = ["SEGMENTATION_CLASSES", "render_lefusion_report", "write_lefusion_report"]

SEGMENTATION_CLASSES = ("LV", "myocardium", "MI", "PMO")


def _cell(stats: Mapping, scale: float = 1.0) -> str:
    """A summary over seeds, one decimal."""
    return spread_cell(stats, "n_seeds", 1, scale)


def _dice_rows(table: Mapping[str, Mapping[str, Mapping]]) -> list[str]:
    return markdown_table(
        ("training mix", *(f"{c} Dice" for c in SEGMENTATION_CLASSES), "seeds"),
        (
            (mix, *(_cell(classes[c], 100) for c in SEGMENTATION_CLASSES), classes["LV"]["n_seeds"])
            for mix, classes in table.items()
        ),
    )


def _bar_plot(path: Path, table: Mapping[str, Mapping[str, Mapping]], title: str) -> None:
    plt = pyplot()

    mixes = list(table)
    fig, axes = plt.subplots(
        1, len(SEGMENTATION_CLASSES), figsize=(3.2 * len(SEGMENTATION_CLASSES), 0.35 * len(mixes) + 1.6), sharey=True
    )
    y = np.arange(len(mixes))
    for axis, cls in zip(axes, SEGMENTATION_CLASSES):
        means = [table[m][cls]["mean"] * 100 for m in mixes]
        stds = [table[m][cls]["std"] * 100 if table[m][cls]["n_seeds"] > 1 else 0 for m in mixes]
        colours = ["0.55" if m == "P" else "C0" if "P′ " in m else "C2" for m in mixes]
        axis.barh(y, np.nan_to_num(means), xerr=np.nan_to_num(stds), color=colours, capsize=2)
        baseline = table["P"][cls]["mean"] * 100 if "P" in table else math.nan
        if math.isfinite(baseline):
            axis.axvline(baseline, color="0.3", lw=0.8, ls="--")
        axis.set_title(f"{cls} Dice", fontsize=9)
        axis.tick_params(labelsize=7)
    axes[0].set_yticks(y, mixes)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _example_panel(path: Path, study, methods: Sequence[str]) -> str | None:
    """image | mask | each method on the test slice with the most lesion (both lesion classes when possible)."""
    from ..io.nifti import read_nifti

    datalists = {m: study.synthetic_dir("tab2", m) / "datalist.json" for m in methods}
    if not all(p.exists() for p in datalists.values()):
        return None
    entries = {m: {e["source_case_id"]: e for e in json.loads(p.read_text())["training"]} for m, p in datalists.items()}
    candidates = sorted(set.intersection(*(set(e) for e in entries.values())))
    if not candidates:
        return None
    first = entries[methods[0]]
    labels = {c: np.asarray(read_nifti(datalists[methods[0]].parent / first[c]["label"])[0]) for c in candidates}
    case = max(candidates, key=lambda c: (bool((labels[c] == 4).any()), int((labels[c] >= 3).sum())))
    label = labels[case]
    z = int(np.argmax([(label[..., k] >= 3).sum() + 10 * (label[..., k] == 4).sum() for k in range(label.shape[-1])]))
    rows, cols = np.nonzero(label[..., z] > 0)
    box = (slice(max(rows.min() - 8, 0), rows.max() + 9), slice(max(cols.min() - 8, 0), cols.max() + 9))
    real = np.asarray(
        read_nifti(
            first[case]["source_image"]
            if Path(first[case]["source_image"]).is_absolute()
            else datalists[methods[0]].parent / first[case]["source_image"]
        )[0],
        dtype=np.float32,
    )
    low, high = float(real.min()), float(real.max())
    panels = [("real image", real[..., z][box], "gray"), ("real mask", label[..., z][box], "viridis")]
    for m in methods:
        image = np.asarray(read_nifti(datalists[m].parent / entries[m][case]["image"])[0], dtype=np.float32)
        panels.append((m, image[..., z][box], "gray"))
    image_row(path, panels, (low, high), label_max=4)
    return f"test case {case.split('_', 1)[-1] if case.startswith('testP_') else case}, slice {z}"


def write_lefusion_report(study, report_dir: str | Path | None = None) -> Path:
    """``lefusion_study.json`` (every number of the report) and ``lefusion_study.md`` rendered from it alone
    (:func:`render_lefusion_report`), + ``similarity.png``, ``dice.png``, ``examples.png`` in ``report_dir``
    (default ``OUT/report``); numbers are read from the study folder, nothing is recomputed by hand."""
    out = Path(report_dir or study.out / "report")
    methods = list(study.methods)
    classes = ("MI", "PMO")
    tab2 = similarity_report(
        {m: study.synthetic_dir("tab2", m) / "datalist.json" for m in methods},
        out,
        classes=classes,
        title="Tab. 2 analogue: lesion-region similarity to the real test cases",
    )
    tab2_cases = json.loads((out / "similarity.json").read_text())["cases"]
    seeds = list(study.scale.get("seeds", [0]))
    dice, dice_pathological, distances = {}, {}, {}
    for mix in study.mixes():
        files = [study.segmentation_dir(mix, s) / "scores.json" for s in seeds]
        files = [f for f in files if f.exists()]
        dice[mix] = seed_summary(files, "dice", SEGMENTATION_CLASSES)
        dice_pathological[mix] = seed_summary(files, "dice", SEGMENTATION_CLASSES, group="pathological")
        distances[mix] = {m: seed_summary(files, m, SEGMENTATION_CLASSES) for m in ("hd95", "assd")}
    _bar_plot(
        out / "dice.png",
        dice_pathological,
        "Tab. 1 analogue: Dice ×100 on the pathological test cases (mean ± std over seeds)",
    )
    results = as_results(
        {
            "study": "lefusion_study",
            "scale_name": study.scale.get("name", study.scale_path.stem),
            "provenance": study.provenance("lefusion_study"),
            "scale": study.scale,
            "split": json.loads((study.out / "split" / "split.json").read_text()),
            "seeds": seeds,
            "methods": methods,
            "tab2_classes": list(classes),
            "tab2": tab2,
            "tab2_cases": tab2_cases,
            "tab1_dice": dice,
            "tab1_dice_pathological": dice_pathological,
            "tab1_distances": distances,
            "example": _example_panel(out / "examples.png", study, methods),
            "timings_s": study.step_timings(),
            "wall_time": study.wall_time(
                (("training", "train_"), ("synthesis", "synth_"), ("segmentation", "segment_")), "lefusion_study.json"
            ),
        }
    )
    write_results(out / "lefusion_study.json", results)
    with atomic_path(out / "lefusion_study.md") as tmp:
        tmp.write_text(render_lefusion_report(results))
    return out / "lefusion_study.md"


def render_lefusion_report(results: Mapping) -> str:
    """The generated Markdown of the LeFusion study from its results JSON alone (no discussion: that is written
    separately, beside it)."""
    split, seeds = results["split"], results["seeds"]
    tab2_text = similarity_markdown(
        results["tab2"], {m: len(cases) for m, cases in results["tab2_cases"].items()}, results["tab2_classes"]
    ).strip()
    rows, rows_pathological = _dice_rows(results["tab1_dice"]), _dice_rows(results["tab1_dice_pathological"])
    dist_rows = markdown_table(
        ("training mix", *(f"{c} HD95 / ASSD" for c in SEGMENTATION_CLASSES)),
        (
            (mix, *(f"{_cell(table['hd95'][c])} / {_cell(table['assd'][c])}" for c in SEGMENTATION_CLASSES))
            for mix, table in results["tab1_distances"].items()
        ),
    )
    example = results["example"]
    return f"""# LeFusion study at {results["scale_name"]} scale

{provenance_markdown(results["provenance"])}

Split by case (seed {split["seed"]}, test fraction {split["test_fraction"]}): {len(split["train"])} training cases,
{len(split["test"])} test cases ({", ".join(split["test"])}). Texture and mask models are trained on the training
pathological cases only; Tab. 2 re-textures the test pathological cases; Tab. 1 scores on all test cases.

## Tab. 2 analogue: image similarity of the synthesised lesions

{tab2_text}

![similarity](similarity.png)

## Tab. 1 analogue: downstream segmentation Dice (×100)

DynUNet (nnU-Net plan, 2D), same training budget for every mix; mean ± std over {len(seeds)} seeds
{seeds} of the per-seed mean over the test cases.

All test cases (a lesion class absent from a normal heart scores 1 when none is predicted, 0 for a false alarm):

{chr(10).join(rows)}

Pathological test cases only (the lesion columns are then closest to the paper's lesion Dice):

{chr(10).join(rows_pathological)}

Surface distances (in the label files' voxel units; mean ± std over seeds of case means, undefined for
cases where the class is absent from one of the two masks):

{chr(10).join(dist_rows)}

![dice](dice.png)

## Example

{example_markdown(example, "real image, real mask and every method")}

{wall_time_markdown(results["wall_time"])}
"""
