"""Issue 18's measurement in one command: ``python -m pathosynth.cli sampler_benchmark_study OUT --dataset_dir DATA``.

Splits DATA by case (as the LeFusion study does: ``test_fraction`` and ``split_seed`` of the scale), trains the
LeFusion-J model and the clean-context variant on the training cases (two ``python -m monai.bundle run training``
steps, resumable like every study step), then runs :mod:`.sampler_benchmark` on the held-out pathological cases with
the default grid plus the clean-context settings and the hand-crafted texture (fitted on the training lesions) as a
no-network baseline. Scales live in ``bundles/lesion_inpainting/configs/study/`` (``sampler_cpu``: CPU scale;
``sampler_ci``: the test suite's); the section ``inpainting`` holds the bundle keys of both training and synthesis,
``grid`` optionally replaces the grid. Outputs: ``OUT/benchmark/sampler_benchmark.{json,md,png}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import write_json
from .bundle_study import BundleStudy, StudyJob
from .sampler_benchmark import DEFAULT_GRID, SamplerBenchmark

__all__ = ["SamplerBenchmarkStudy", "study_grid"]

CLEAN_CONTEXT = ["inference_clean_context.json"]


def study_grid(train_datalist: str) -> dict:
    """The default grid, the clean-context model at 25 and 10 respaced DDPM steps and at 25 DDIM η = 0 steps, and the
    hand-crafted texture fitted on ``train_datalist``'s lesions (never on the benchmarked cases)."""
    fit = (
        f"$pathosynth.data.cases.load_cases(datalist={train_datalist!r}, labels=@labels, "
        "lesion_classes=@lesion_classes, select='with_lesion')"
    )
    extra = [
        {"name": "clean-context DDPM 25", "overlays": CLEAN_CONTEXT, "num_inference_steps": 25},
        {"name": "clean-context DDPM 10", "overlays": CLEAN_CONTEXT, "num_inference_steps": 10},
        {"name": "clean-context DDIM eta=0 25", "overlays": CLEAN_CONTEXT, "num_inference_steps": 25, "eta": 0.0},
        {"name": "hand-crafted (no network)", "overlays": ["inference_handcrafted.json"], "texture_fit_cases": fit},
    ]
    return {"reference": DEFAULT_GRID["reference"], "settings": [*DEFAULT_GRID["settings"], *extra]}


class SamplerBenchmarkStudy(BundleStudy):
    scale_bundle = "lesion_inpainting"

    @property
    def ckpt_dir(self) -> str:
        return str(self.out / "models" / "lesion_inpainting")

    def training_jobs(self) -> list[StudyJob]:
        files, settings = self.section("inpainting")
        common = {
            **settings,
            "datalist": self.split_path("train_pathological"),
            "ckpt_dir": self.ckpt_dir,
            "output_dir": str(self.out / "logs" / "tensorboard"),
        }
        return [
            StudyJob("train_lefusion_j", "lesion_inpainting", ["train.json", *files], common, "training"),
            StudyJob(
                "train_clean_context",
                "lesion_inpainting",
                ["train.json", "train_clean_context.json", *files],
                common,
                "training",
            ),
        ]

    def run(self) -> Path:
        self.write_case_split()
        self.run_jobs(self.training_jobs())
        files, settings = self.section("inpainting")
        scale_overlay = self.out / "jobs" / "benchmark_scale.json"
        write_json(scale_overlay, settings)
        grid = self.scale.get("grid") or study_grid(self.split_path("train_pathological"))
        grid_path = self.out / "jobs" / "benchmark_grid.json"
        grid_path.write_text(json.dumps(grid, indent=2) + "\n")
        bench = SamplerBenchmark(
            self.out / "benchmark",
            None,
            self.ckpt_dir,
            [*files, str(scale_overlay)],
            grid_path,
            self.scale.get("seeds", [0, 1]),
            self.scale.get("max_cases"),
            datalist=self.split_path("test_pathological"),
        )
        bench.command = (
            f"python -m pathosynth.cli sampler_benchmark_study OUT --dataset_dir DATA --scale {self.scale_path.stem}"
        )
        return bench.run()
