"""The paper's Tab. 2 analogue from the classifier reports of one evaluation folder: a Markdown table and a bar plot.

Each report (written by :func:`~pathosynth.evaluation.classifiers.evaluate_folds`) is one classifier trained on one kind
of data (synthetic, real, real + synthetic); a row gives the mean ± std over the cross-validation folds of each
score on the real held-out split, and the accuracy of the fold ensemble. Numbers only: no image is drawn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io.atomic import atomic_path

__all__ = ["read_reports", "results_table", "write_results_table"]

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


def results_table(reports: list[dict]) -> str:
    """Markdown: one row per (training data, classifier)."""
    lines = [
        "| training data | classifier | train images | folds | " + " | ".join(METRICS) + " | ensemble accuracy |",
        "|---|---|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for r in reports:
        scores = " | ".join(f"{r['mean'][m]:.3f} ± {r['std'][m]:.3f}" for m in METRICS)
        lines.append(
            f"| {r['training_data']} | {r['classifier']} | {r['training']['num_images']} | {len(r['folds'])} | "
            f"{scores} | {r['ensemble']['accuracy']:.3f} |"
        )
    if reports:
        lines.append(
            f"\nTest split: '{reports[0]['test_split']}' of {reports[0]['test_source']} "
            f"({reports[0]['num_test_images']} images)."
        )
    return "\n".join(lines) + "\n"


def write_results_table(folder: str | os.PathLike) -> str:
    """``results.md`` and ``results.png`` (mean accuracy and AUC per row, fold std as error bars) in ``folder``."""
    reports = read_reports(folder)
    table = results_table(reports)
    with atomic_path(Path(folder) / "results.md") as tmp:
        tmp.write_text(table)
    if reports:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        names = [f"{r['training_data']}\n{r['classifier']}" for r in reports]
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
        axis.set_xticks(x, names, fontsize=7)
        axis.set_ylim(0, 1)
        axis.set_ylabel("score on real test split")
        axis.legend(fontsize=7)
        with atomic_path(Path(folder) / "results.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    return table
