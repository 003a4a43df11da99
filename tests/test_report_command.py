"""`python -m pathosynth.cli report RESULTS.json`: a study's generated Markdown from its results JSON alone.

Each study kind gets a small hand-made results JSON; the rendered tables must show its numbers as the study's
report does (mean ± std, ×100 where the paper reports ×100, ∞ for an identical background, minutes of wall time).
The study end-to-end tests check that the Markdown a study writes equals what `report` renders from its JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from pathosynth import cli
from pathosynth.studies.reports import render_report

PROVENANCE = {
    "command": "some_study",
    "scale": "ci",
    "description": "tiny test scale, seconds on a CPU",
    "code": {"commit": "0123456789abcdef0123", "uncommitted_changes": True},
}
WALL = {
    "phases": [{"phase": "training", "steps": 6, "seconds": 1908.0}, {"phase": "synthesis", "steps": 0, "seconds": 0}],
    "invocations": [
        {"started": "2025-01-01T00:00:00", "seconds": 3000.0, "jobs": 2},
        {"started": "2025-01-02T00:00:00", "seconds": 1920.0, "jobs": 2},
    ],
    "jobs": 2,
    "threads_per_job": 1,
    "cpu_count": 2,
    "details": "x.json",
}


def _write(tmp_path, results, name: str = "results.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return str(path)


def _seeds(mean, std, n=2):
    return {"mean": mean, "std": std, "n_seeds": n, "per_seed": []}


def _common_checks(text: str) -> None:
    assert "--scale ci`\n(tiny test scale, seconds on a CPU)." in text
    assert "commit `0123456789ab` with uncommitted changes" in text
    assert "| training | 6 | 31.8 |" in text and "| synthesis | 0 | 0.0 |" in text
    assert "the study took 82.0 min of wall time over 2 invocation(s)" in text


def test_lefusion_report_shows_tab2_and_tab1_numbers(tmp_path):
    psnr_ssim = lambda p, s: {"psnr": {"mean": p, "std": 1.5, "n": 2}, "ssim": {"mean": s, "std": 0.1, "n": 2}}  # noqa: E731
    summary = {
        "MI": psnr_ssim(32.01, 0.7841),
        "PMO": psnr_ssim(18.75, 0.2571),
        "all lesions": psnr_ssim(28.94, 0.7486),
        "background": {"psnr": {"mean": "inf", "std": None, "n": 2}, "ssim": {"mean": 0.9995, "std": 0.0006, "n": 2}},
    }
    dice = {
        "LV": _seeds(0.870, 0.008),
        "myocardium": _seeds(0.680, 0.003),
        "MI": _seeds(0.093, 0.136),
        "PMO": {"mean": None, "std": None, "n_seeds": 0, "per_seed": []},
    }
    results = {
        "study": "lefusion_study",
        "scale_name": "CI",
        "provenance": {**PROVENANCE, "command": "lefusion_study"},
        "split": {
            "seed": 0,
            "test_fraction": 0.25,
            "train": ["Case_P002", "Case_N002"],
            "test": ["Case_P001", "Case_N001"],
        },
        "seeds": [0, 1],
        "methods": ["LeFusion-J"],
        "tab2_classes": ["MI", "PMO"],
        "tab2": {"LeFusion-J": summary},
        "tab2_cases": {"LeFusion-J": [{}, {}]},
        "tab1_dice": {"P": dice},
        "tab1_dice_pathological": {"P": dice},
        "tab1_distances": {"P": {"hd95": dice, "assd": dice}},
        "example": None,
        "wall_time": WALL,
    }
    text = render_report(_write(tmp_path, results))
    _common_checks(text)
    assert "# LeFusion study at CI scale" in text
    assert (
        "| LeFusion-J | 2 | 32.01 ± 1.50 | 78.41 ± 10.00 | 18.75 ± 1.50 | 25.71 ± 10.00 | 28.94 ± 1.50 | 74.86 ± 10.00 "
        "| ∞ (identical) | 99.95 ± 0.06 |" in text
    )
    assert "| P | 87.0 ± 0.8 | 68.0 ± 0.3 | 9.3 ± 13.6 | – | 2 |" in text
    assert "2 test cases (Case_P001, Case_N001)" in text


def test_fqcdm_report_shows_quality_downstream_and_the_vq_caveat(tmp_path):
    quality = {
        "FQCDM": {
            "psnr": {"mean": 21.234, "std": 2.0, "n": 12},
            "ms_ssim": {"mean": 0.5123, "std": 0.05, "n": 12},
            "fid": {"fid": 14.5, "n_a": 12, "extractor": "random-conv"},
            "class_intensity": {},
        },
        "VQ reconstruction": {
            "psnr": {"mean": 30.5, "std": 1.0, "n": 12},
            "ms_ssim": {"mean": 0.9, "std": 0.01, "n": 12},
            "fid": {"fid": 2.25, "n_a": 12, "extractor": "random-conv"},
            "class_intensity": {},
        },
    }
    run = {"n_real": 2, "n_synthetic": 4, "augment": True, "pretrained": False}
    name = "real2+syn4_aug"
    summary = {
        "mean": _seeds(0.7512, 0.0101),
        "RV": _seeds(0.6, 0.02),
        "myocardium": _seeds(0.65, 0.03),
        "LV": _seeds(0.8, 0.01),
    }
    results = {
        "study": "fqcdm_study",
        "scale_name": "CI",
        "provenance": {**PROVENANCE, "command": "fqcdm_study"},
        "scale": {"pretraining_cases": 3},
        "split": {"seed": 0, "test_fraction": 0.25, "train": ["a", "b"], "test": ["c"]},
        "n_quality_cases": 1,
        "synthesis": {"fov_size": [64, 64], "image_size": [32, 32]},
        "quality_classes": [],
        "quality": quality,
        "samplers": {
            "reference": "DDPM 100 (default)",
            "settings": [
                {
                    "name": "DDPM 100 (default)",
                    "sampler": {"step": "ddpm", "eta": None, "num_inference_steps": 100, "num_train_timesteps": 100},
                    "network_calls_per_slice": 100.0,
                    "cases": ["c"],
                    "step_seconds": 80.0,
                    "time_ratio": 1.0,
                    "quality": quality["FQCDM"],
                },
                {
                    "name": "DDIM eta=0 25",
                    "sampler": {"step": "ddim", "eta": 0.0, "num_inference_steps": 25, "num_train_timesteps": 100},
                    "network_calls_per_slice": 25.0,
                    "cases": ["c"],
                    "step_seconds": 26.0,
                    "time_ratio": 0.325,
                    "quality": {**quality["FQCDM"], "psnr": {"mean": 19.5, "std": 2.5, "n": 12}},
                },
            ],
        },
        "segmenter": {"network": "MONAI UNet", "max_steps": 10, "batch_size": 2, "in_plane_size": 32},
        "runs": {name: run},
        "panels": {"tab4": [name], "fig4": [name], "fig5": [], "fig6": []},
        "downstream": {name: summary},
        "seeds": [0, 1],
        "example": None,
        "wall_time": WALL,
    }
    text = render_report(_write(tmp_path, results))
    _common_checks(text)
    assert "| FQCDM | 21.23 ± 2.00 | 51.23 ± 5.00 | 14.50 | 12 |" in text
    assert "| ✓ | ✓ | ✓ | FQCDM | 21.23 | 51.23 |" in text
    assert (
        "| Synthetic images + Real images + Data augmentation (2 real, 4 synthetic) | 75.1 ± 1.0 | 60.0 ± 2.0 |" in text
    )
    assert "is not a generative" in text and "encodes and decodes the real test image" in text
    # issue 18: the sampler comparison, quality next to network calls and the step-time ratio
    assert "## Sampler: quality against network calls" in text and "the reference\nis **DDPM 100 (default)**" in text
    assert (
        "| **DDPM 100 (default)** | DDPM, 100 of 100 timesteps | 100 | 21.23 ± 2.00 | 51.23 ± 5.00 | 14.50 | 12 | 80.0 "
        "| 1.00 |" in text
    )
    assert (
        "| DDIM eta=0 25 | DDIM η = 0, 25 of 100 timesteps | 25 | 19.50 ± 2.50 | 51.23 ± 5.00 | 14.50 | 12 | 26.0 "
        "| 0.33 |" in text
    )
    del results["samplers"]  # a scale without samplers: no such section
    assert "Sampler:" not in render_report(_write(tmp_path, results, "without_samplers.json"))


def test_emit_diff_report_shows_tab2_and_ablations(tmp_path):
    def folds(mean, std):
        return {"mean": mean, "std": std, "n_folds": 2, "per_fold": []}

    def metric(m, s):
        return {"RV": folds(m, s), "LV": folds(m, s), "mean": folds(m, s)}

    def summary(d):
        return {
            "dice": metric(d, 0.012),
            "precision": metric(0.8, 0.01),
            "recall": metric(0.7, 0.02),
            "hd95": metric(4.5, 0.5),
            "assd": metric(1.25, 0.25),
        }

    emit = {
        "name": "emit",
        "label": "EMIT-Diff",
        "augmentation": None,
        "synthetic": True,
        "alpha": 0.6,
        "patch_size": 64,
        "variants_per_case": 2,
    }
    base = {
        "name": "baseline",
        "label": "Baseline",
        "augmentation": None,
        "synthetic": False,
        "alpha": None,
        "patch_size": None,
        "variants_per_case": None,
    }
    results = {
        "study": "emit_diff_study",
        "scale_name": "CI",
        "provenance": {**PROVENANCE, "command": "emit_diff_study"},
        "folds": {
            "group_key": "patient",
            "seed": 0,
            "cases": ["a", "b", "c", "d"],
            "max_units": None,
            "folds": [{"train": ["a", "b"], "test": ["c", "d"]}, {"train": ["c", "d"], "test": ["a", "b"]}],
        },
        "k": 2,
        "classes": ["RV", "LV"],
        "ablation_folds": [0],
        "fold_variants": [2, 2],
        "emit_diff": {
            k: emit[k] for k in ("name", "augmentation", "synthetic", "alpha", "patch_size", "variants_per_case")
        },
        "segmenter": {"network": "MONAI AttentionUnet", "max_steps": 5, "batch_size": 2, "in_plane_size": 32},
        "runs": {"baseline": base, "emit": emit},
        "panels": {"tab2": ["baseline", "emit"], "ratio": ["emit"]},
        "summaries": {"baseline": summary(0.701), "emit": summary(0.7234)},
        "ablation_summaries": {"baseline": summary(0.69), "emit": summary(0.71)},
        "seeds": [0],
        "wall_time": WALL,
    }
    text = render_report(_write(tmp_path, results))
    _common_checks(text)
    assert "| EMIT-Diff | 72.34 ± 1.20 | 80.00 ± 1.00 | 70.00 ± 2.00 | 4.50 ± 0.50 | 1.25 ± 0.25 | 2 |" in text
    assert "| 2 | 71.00 ± 1.20 | 4.50 ± 0.50 | 2 |" in text
    assert "Baseline on the same fold(s): mean Dice ×100 69.00 ± 1.20." in text


def test_reference_guided_report_shows_fold_means_and_ensemble(tmp_path):
    row = {
        "mix": "real+synthetic_50",
        "synthetic_fraction": 0.5,
        "n_synthetic": 40,
        "classifier": "resnet18",
        "n_train": 90,
        "n_test": 30,
        **{m: 0.8125 for m in ("auc", "f1", "accuracy", "precision", "recall")},
        **{f"{m}_std": 0.0125 for m in ("auc", "f1", "accuracy", "precision", "recall")},
        **{f"ensemble_{m}": 0.875 for m in ("auc", "f1", "accuracy", "precision", "recall")},
        "auc_std": None,
    }
    results = {
        "study": "reference_guided_study",
        "scale": "ci",
        "provenance": {**PROVENANCE, "command": "reference_guided_study"},
        "split": {"seed": 0, "train": ["a", "b"], "test": ["c"]},
        "slice_class_counts": {"real_train": [10, 5], "real_test": [4, 2], "synthetic": [0, 40]},
        "scores": [row],
        "wall_time": WALL,
    }
    text = render_report(_write(tmp_path, results))
    _common_checks(text)
    assert (
        "| real+synthetic_50 | 40 | resnet18 | 0.812 ± nan | 0.812 ± 0.013 |" in text
    )  # a null std reads as undefined
    assert "| real+synthetic_50 | 40 | resnet18 | 0.875 | 0.875 |" in text
    assert "Slice counts [no lesion, lesion]: real_train [10, 5], real_test [4, 2], synthetic [0, 40]." in text


def test_mask_realism_markdown_equals_the_rendering_of_its_json(tmp_path):
    """The one report here cheap enough to compute for real: what it writes is what `report` renders."""
    from pathosynth.masks.realism import realism_report

    label = np.zeros((24, 24, 2), dtype=np.uint8)
    yy, xx = np.mgrid[:24, :24]
    radius = np.hypot(yy - 12, xx - 12)
    label[(radius < 5)] = 1
    label[(radius >= 5) & (radius < 8)] = 2
    label[(radius >= 5) & (radius < 8) & (xx > 14)] = 3
    label[(radius >= 6) & (radius < 7) & (xx > 17)] = 4
    realism_report({"real": [label], "empty": [np.where(label > 2, 2, label)]}, None, tmp_path, title="masks")
    assert render_report(tmp_path / "mask_realism.json") == (tmp_path / "mask_realism.md").read_text()


def test_cli_writes_the_report_atomically_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    psnr = {"psnr": {"mean": 20.0, "std": 1.0, "n": 2}, "ssim": {"mean": 0.5, "std": 0.1, "n": 2}}
    results = {
        "study": "reference_guided_study",
        "scale": "ci",
        "provenance": PROVENANCE,
        "split": {"seed": 0, "train": [], "test": []},
        "slice_class_counts": {},
        "scores": [],
        "wall_time": WALL,
        "unused": psnr,
    }
    source = _write(tmp_path, results)
    out = tmp_path / "report.md"
    monkeypatch.setattr(sys, "argv", ["pathosynth.cli", "report", source, "--out", str(out)])
    cli.main()
    assert out.read_text() == render_report(source) and f"wrote {out}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp*"))

    (tmp_path / "other.json").write_text(json.dumps({"title": "no kind"}))
    with pytest.raises(ValueError, match=r"other\.json: 'study' is None"):
        cli.report(str(tmp_path / "other.json"))
    del results["wall_time"]
    with pytest.raises(
        ValueError, match=r"partial\.json: the reference_guided_study results lack the field 'wall_time'"
    ):
        cli.report(_write(tmp_path, results, "partial.json"))
    with pytest.raises(ValueError, match="is the results file itself"):
        cli.report(source, out=source)


def test_cells_render_the_same_from_memory_and_from_the_json_read_back():
    """Every report cell goes through one formatter: a number renders identically before and after its results JSON
    round trip (NaN → null, inf → "inf"); no repeat shows "–", one repeat its mean alone (no spread), more show
    mean ± std."""
    from pathosynth.io.results import as_results
    from pathosynth.markdown_tables import fixed, markdown_table, spread_cell

    for value in (float("nan"), float("inf"), float("-inf"), 0.123456):
        assert fixed(as_results({"v": value})["v"], 3) == fixed(value, 3)
    assert [fixed(v) for v in (None, "inf", float("-inf"), 0.125)] == ["–", "∞", "-∞", "0.12"]
    one, many = {"mean": 0.5, "std": float("nan"), "n": 1}, {"mean": 0.5, "std": 0.1, "n": 3}
    assert spread_cell(as_results(one), scale=100) == spread_cell(one, scale=100) == "50.00"
    assert spread_cell(many, digits=1, scale=100) == "50.0 ± 10.0" and spread_cell({"n": 0}) == "–"
    assert markdown_table(("a", "b"), [(1, "x")]) == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_classification_report_renders_from_its_results_json(tmp_path):
    """The class-conditional Tab. 2 analogue: the evaluation folder's reports (as ``evaluate_folds`` writes them) are
    collected in results.json; results.md is what `report` renders from that file alone, rows ordered synthetic,
    real, real + synthetic, each score mean ± std over folds, then the fold ensemble's accuracy and AUC."""
    from pathosynth.evaluation.classification_report import write_results_table

    metrics = ("accuracy", "precision", "recall", "f1", "auc")

    def report(training, accuracy, n_images):
        folds = [
            {"checkpoint": f"f{k}.pt", "best_epoch": 2, "stopped_epoch": 4, **dict.fromkeys(metrics, 0.5)}
            for k in (0, 1)
        ]
        return {
            "classifier": "resnet18",
            "training_sources": [f"{training}.npz"],
            "test_source": "pneumoniamnist.npz",
            "test_split": "val",
            "num_test_images": 270,
            "training": {"classifier": "resnet18", "num_images": n_images},
            "folds": folds,
            "mean": {**dict.fromkeys(metrics, 0.9), "accuracy": accuracy},
            "std": {**dict.fromkeys(metrics, 0.01), "accuracy": 0.0125},
            "ensemble": {**dict.fromkeys(metrics, 0.95), "auc": 0.9975},
        }

    (tmp_path / "real_resnet18.json").write_text(json.dumps(report("real", 0.944, 2428)))
    (tmp_path / "synthetic_resnet18.json").write_text(json.dumps(report("synthetic", 0.77, 1000)))
    table = write_results_table(tmp_path)
    assert render_report(tmp_path / "results.json") == (tmp_path / "results.md").read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| synthetic") or line.startswith("| real")]
    others = " | ".join(["0.900 ± 0.010"] * 4)
    assert rows == [
        f"| synthetic | resnet18 | 1000 | 2 | 0.770 ± 0.013 | {others} | 0.950 | 0.998 |",
        f"| real | resnet18 | 2428 | 2 | 0.944 ± 0.013 | {others} | 0.950 | 0.998 |",
    ]
    assert "Test split: 'val' of pneumoniamnist.npz (270 images)." in table
