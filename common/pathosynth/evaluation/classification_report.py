"""The paper's Tab. 2 analogue from the classifier reports of one evaluation folder: a Markdown table and a bar plot.

Each report (written by :func:`~pathosynth.evaluation.classifiers.evaluate_folds`) is one classifier trained on one kind
of data (synthetic, real, real + synthetic); a row gives the mean ± sample std over the cross-validation folds of each
score on the real held-out split, and the accuracy and AUC of the fold ensemble. Numbers only: no image is drawn.
The folder's ``results.json`` holds every report; ``results.md`` is rendered from it alone, so
``python -m pathosynth.cli report results.json`` gives the same Markdown on a machine that has only the JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from ..markdown_tables import fixed, markdown_table, mean_std

__all__ = [
    "classification_results",
    "plot_classification",
    "read_reports",
    "render_classification_report",
    "write_results_table",
]

METRICS = ("accuracy", "precision", "recall", "f1", "auc")
ORDER = {"synthetic": 0, "real": 1, "real+synthetic": 2}


def read_reports(folder: str | os.PathLike) -> list[dict]:
    """Every classifier report in ``folder``, ordered by training data (synthetic, real, real+synthetic) then
    classifier."""
    reports = []
    for path in sorted(Path(folder).glob("*.json")):
        content = json.loads(path.read_text())
        if isinstance(content, dict) and {"classifier", "mean", "std", "training"} <= set(content):
            content["training_data"] = path.stem[: -len(content["classifier"]) - 1]
            reports.append(content)
    return sorted(reports, key=lambda r: (ORDER.get(r["training_data"], 9), r["training_data"], r["classifier"]))


def classification_results(reports: list[dict]) -> dict:
    """The results JSON of one evaluation folder: its reports (per fold, mean, std, ensemble) in table order, under
    the kind ``"classification"`` that ``pathosynth.cli report`` renders."""
    return as_results({"study": "classification", "metrics": list(METRICS), "reports": reports})


def render_classification_report(results: Mapping) -> str:
    """``results.md`` from the results JSON alone: one row per (training data, classifier), each score the mean ± std
    over the cross-validation folds, then the fold ensemble's accuracy and AUC; the real test split it was scored on."""
    metrics, reports = results["metrics"], results["reports"]
    lines = markdown_table(
        ("training data", "classifier", "train images", "folds", *metrics, "ensemble accuracy", "ensemble AUC"),
        (
            (
                r["training_data"],
                r["classifier"],
                r["training"]["num_images"],
                len(r["folds"]),
                *(mean_std(r["mean"][m], r["std"][m], 3) for m in metrics),
                fixed(r["ensemble"]["accuracy"], 3),
                fixed(r["ensemble"].get("auc"), 3),
            )
            for r in reports
        ),
    )
    if reports:
        lines.append(
            f"\nTest split: '{reports[0]['test_split']}' of {reports[0]['test_source']} "
            f"({reports[0]['num_test_images']} images)."
        )
    return "\n".join(lines) + "\n"


def write_results_table(folder: str | os.PathLike) -> str:
    """``results.json`` (:func:`classification_results` of every report in ``folder``), ``results.md`` rendered from
    it alone and ``results.png`` (mean accuracy and AUC per row, fold std as error bars)."""
    reports = read_reports(folder)
    results = classification_results(reports)
    write_results(Path(folder) / "results.json", results)
    table = render_classification_report(results)
    with atomic_path(Path(folder) / "results.md") as tmp:
        tmp.write_text(table)
    plot_classification(reports, Path(folder) / "results.png")
    return table


def plot_classification(reports: list[dict], path: str | os.PathLike) -> None:
    """A bar plot of each report's mean accuracy and AUC on the real test split, fold std as error bars (numbers
    only); nothing is written when there is no report."""
    if not reports:
        return
    import numpy as np

    from .figures import pyplot, save_figure

    plt = pyplot()
    x = np.arange(len(reports))
    fig, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(reports)), 3.2))
    for offset, metric in ((-0.2, "accuracy"), (0.2, "auc")):
        axis.bar(
            x + offset,
            [r["mean"][metric] for r in reports],
            0.4,
            yerr=[r["std"][metric] for r in reports],
            label=metric,
            capsize=3,
        )
    axis.set_xticks(x, [f"{r['training_data']}\n{r['classifier']}" for r in reports], fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_ylabel("score on real test split")
    axis.legend(fontsize=7)
    save_figure(fig, path, dpi=110)
