"""The EMIT-Diff comparison study in one resumable command: Tab. 2 (no augmentation, each classic augmentation, and
EMIT-Diff, by k-fold cross-validation over cases) and the Fig. 5 ablations (augmentation ratio n, alpha, patch size).

    python -m pathosynth.cli emit_diff_study OUT --dataset_dir DATA/acdc --scale cpu

Steps (bundle workflow runs of ``text_edge_controlnet``, scheduled and resumed by :class:`.bundle_study.BundleStudy`):

1. folds: k-fold by case, stratified by clinical group (ACDC: by patient, both frames of a heart in one fold;
   EMIDEC: by case, normal / pathological), optionally on a stratified subset of ``max_patients`` units
   (``OUT/split/fold<i>/{train,test}.json``, ``OUT/split/folds.json``).
2. per fold, on the fold's training cases only: stage 1 (text-conditioned DDPM), stage 2 (ControlNet on edges), then
   synthesis of n variants per training case (n = the largest ratio any run of the fold uses; a run with ratio n'
   uses the first n' variants of every case, ``variants_per_case``).
3. per fold and seed, segmentation (``train_segmentation.json``, MONAI AttentionUnet) on the fold's training cases,
   scored on its test cases: the baseline (no synthetic data, no augmentation), each classic augmentation
   (``configs/augmentation/*.json``), and EMIT-Diff (Algorithm 1 with the scale's default n, alpha, patch size). On
   ``ablation_folds``, also EMIT-Diff with each ratio n, each alpha and each patch size (the others at the defaults);
   a run with the same settings as another is trained once.
4. report (:mod:`.emit_diff_study_report`).

Nothing of a test fold reaches a generative model, the synthesis or a segmenter's training: each fold's jobs read
only its training datalist, and the synthetic datalist is checked to hold variants of those cases only.

Scales: ``bundles/text_edge_controlnet/configs/study/{cpu,ci,paper}.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.acdc import ACDC_LABELS
from ..data.labels import EMIDEC_LABELS
from ..data.splits import write_kfold
from .bundle_study import BundleStudy, StudyJob, slug

__all__ = ["ABLATIONS", "AUGMENTATIONS", "LAYOUT_LABELS", "EmitDiffStudy", "SegmentationRun"]

# Tab. 2 row -> its overlay in bundles/text_edge_controlnet/configs/augmentation/
AUGMENTATIONS: dict[str, str] = {
    "RandomContrast": "contrast.json",
    "RandomGamma": "gamma.json",
    "RandomBrightness": "brightness.json",
    "RandomNoise": "noise.json",
    "RandomResolution": "resolution.json",
    "RandomMirror": "mirror.json",
    "RandomRotate": "rotate.json",
    "RandomScale": "scale.json",
    "DeepStack": "deepstack.json",
}
# Fig. 5 panel -> (scale key listing its values, the SegmentationRun field it varies)
ABLATIONS: dict[str, tuple[str, str]] = {
    "ratio": ("ratios", "variants_per_case"),
    "alpha": ("alphas", "alpha"),
    "patch_size": ("patch_sizes", "patch_size"),
}
# dataset layout -> (label map, scored classes) of the segmenters and the edge maps
LAYOUT_LABELS: dict[str, tuple[dict[str, int], list[str]]] = {
    "acdc": (dict(ACDC_LABELS), ["RV", "myocardium", "LV"]),
    "emidec": (dict(EMIDEC_LABELS), ["LV", "myocardium", "MI", "PMO"]),
}


@dataclass(frozen=True)
class SegmentationRun:
    """One segmentation set-up of the study: plain, with one classic augmentation, or EMIT-Diff (synthetic)."""

    augmentation: str | None = None
    synthetic: bool = False
    alpha: float | None = None
    patch_size: int | None = None
    variants_per_case: int | None = None

    @property
    def name(self) -> str:
        if self.synthetic:
            return f"emit_diff_n{self.variants_per_case}_alpha{self.alpha:g}_patch{self.patch_size}"
        return slug(self.augmentation) if self.augmentation else "baseline"

    @property
    def label(self) -> str:
        """The row name of Tab. 2."""
        return "EMIT-Diff" if self.synthetic else self.augmentation or "Baseline"


class EmitDiffStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` is an ACDC- or EMIDEC-layout folder."""

    scale_bundle = "text_edge_controlnet"
    bundle = "text_edge_controlnet"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.augmentations = self.scale_names("augmentations", AUGMENTATIONS)
        self.k = int(self.scale.get("folds", 3))
        self.seeds = [int(s) for s in self.scale.get("seeds", [0])]
        ablation_folds = self.scale.get("ablation_folds", [0])
        self.ablation_folds = list(range(self.k)) if ablation_folds == "all" else [int(f) for f in ablation_folds]
        if not set(self.ablation_folds) <= set(range(self.k)):
            raise ValueError(
                f"study scale {self.scale_path}: ablation_folds {self.ablation_folds} are not among the {self.k} folds"
            )
        emit = self.scale.get("emit_diff", {})
        self.emit_diff = SegmentationRun(
            synthetic=True,
            alpha=float(emit.get("alpha", 0.6)),
            patch_size=int(emit.get("patch_size", 64)),
            variants_per_case=int(emit.get("variants_per_case", 10)),
        )

    # ---- labels of the dataset's layout ----------------------------------------------------------------
    @property
    def layout(self) -> str:
        from ..data.layouts import detect_layout

        layout = self.scale.get("layout") or detect_layout(self.dataset_dir)
        if layout not in LAYOUT_LABELS:
            raise ValueError(
                f"{self.dataset_dir}: the study needs an ACDC or EMIDEC layout (or a 'layout' key in the scale), "
                f"found {layout!r}"
            )
        return layout

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.scale.get("labels") or LAYOUT_LABELS[self.layout][0])

    @property
    def classes(self) -> list[str]:
        return list(self.scale.get("scored_classes") or LAYOUT_LABELS[self.layout][1])

    # ---- paths -----------------------------------------------------------------------------------------
    def fold_datalist(self, fold: int, part: str) -> str:
        return str(self.out / "split" / f"fold{fold}" / f"{part}.json")

    def models_dir(self, fold: int) -> str:
        return str(self.out / "models" / f"fold{fold}")

    def synthetic_datalist(self, fold: int) -> str:
        return str(self.out / "synthetic" / f"fold{fold}" / "datalist.json")

    def segmentation_dir(self, fold: int, run: SegmentationRun, seed: int) -> Path:
        return self.out / "segmentation" / f"fold{fold}" / run.name / f"seed{seed}"

    def scores(self, fold: int, run: SegmentationRun) -> list[Path]:
        """The scores.json files of a run on a fold (one per seed that has finished)."""
        return [f for s in self.seeds if (f := self.segmentation_dir(fold, run, s) / "scores.json").exists()]

    # ---- plan ------------------------------------------------------------------------------------------
    def runs(self) -> dict[str, list[SegmentationRun]]:
        """``"tab2"``: baseline, the classic augmentations, EMIT-Diff; each Fig. 5 panel: EMIT-Diff with one setting
        varied (the default EMIT-Diff run is one of its points when its value is listed)."""
        runs = {
            "tab2": [SegmentationRun(), *(SegmentationRun(augmentation=a) for a in self.augmentations), self.emit_diff]
        }
        for panel, (key, field) in ABLATIONS.items():
            values = self.scale.get(key, [])
            runs[panel] = [replace(self.emit_diff, **{field: float(v) if field == "alpha" else int(v)}) for v in values]
        return runs

    def fold_runs(self, fold: int) -> list[SegmentationRun]:
        """The runs trained on a fold (Tab. 2 on every fold, the ablations on ``ablation_folds``), each once."""
        panels = ["tab2", *(ABLATIONS if fold in self.ablation_folds else [])]
        return list(dict.fromkeys(run for panel in panels for run in self.runs()[panel]))

    def fold_variants(self, fold: int) -> int:
        """Variants synthesised per training case of a fold: the largest ratio any of its runs uses (variant k of a
        case does not depend on how many are drawn, so a smaller ratio uses a prefix of the same variants)."""
        return max(run.variants_per_case for run in self.fold_runs(fold) if run.synthetic)

    def generator_job(
        self,
        name: str,
        config: str,
        section: str,
        settings: dict,
        needs: list[str] | None = None,
        workflow: str = "run",
        finish=None,
    ) -> StudyJob:
        files, values = self.section("generative")
        extra_files, extra = self.section(section)
        return StudyJob(
            name,
            self.bundle,
            [config, *files, *extra_files],
            {**values, **extra, "labels": self.labels, "dataset_dir": None, "max_cases": None, **settings},
            workflow=workflow,
            needs=list(needs or []),
            finish=finish,
        )

    def generative_jobs(self, fold: int) -> list[StudyJob]:
        """Stage 1, stage 2 and the synthesis of one fold, all on its training cases only."""
        train = self.fold_datalist(fold, "train")
        common = {
            "datalist": train,
            "ckpt_dir": self.models_dir(fold),
            "output_dir": str(self.out / "logs" / "tensorboard" / f"fold{fold}"),
        }
        stage1, stage2 = f"train_diffusion_fold{fold}", f"train_controlnet_fold{fold}"
        synthesis = {
            "datalist": train,
            "ckpt_dir": self.models_dir(fold),
            "output_dir": str(Path(self.synthetic_datalist(fold)).parent),
            "num_samples_per_case": self.fold_variants(fold),
            "progress": False,
            "preview_classes": self.classes,
        }
        return [
            self.generator_job(stage1, "train_diffusion.json", "diffusion", common, workflow="training"),
            self.generator_job(stage2, "train_controlnet.json", "controlnet", common, [stage1], workflow="training"),
            self.generator_job(
                f"synth_fold{fold}",
                "inference.json",
                "synthesis",
                synthesis,
                [stage1, stage2],
                finish=lambda: self.check_synthetic(fold),
            ),
        ]

    def segmentation_job(self, fold: int, run: SegmentationRun, seed: int) -> StudyJob:
        files, values = self.section("segmentation")
        augmentation = [f"augmentation/{AUGMENTATIONS[run.augmentation]}"] if run.augmentation else []
        settings = {
            **values,
            "labels": self.labels,
            "scored_classes": self.classes,
            "real_datalist": self.fold_datalist(fold, "train"),
            "test_datalist": self.fold_datalist(fold, "test"),
            "synthetic_datalists": [self.synthetic_datalist(fold)] if run.synthetic else [],
            "augment": run.augmentation is not None,
            "seed": seed,
            "output_dir": str(self.segmentation_dir(fold, run, seed)),
        }
        if run.synthetic:
            settings.update(alpha=run.alpha, patch_size=run.patch_size, variants_per_case=run.variants_per_case)
        return StudyJob(
            f"segment_fold{fold}_{run.name}_seed{seed}",
            self.bundle,
            ["train_segmentation.json", *files, *augmentation],
            settings,
            needs=[f"synth_fold{fold}"] if run.synthetic else [],
        )

    def jobs_plan(self) -> list[StudyJob]:
        """Every step, in the order the scheduler prefers among ready steps: each fold's generative chain (fold by
        fold, so the first fold's EMIT-Diff and ablation runs can start early), then the runs that read synthetic
        data, then the others (which fill the cores while the generative models train)."""
        generative = [job for fold in range(self.k) for job in self.generative_jobs(fold)]
        segmentation = [
            self.segmentation_job(fold, run, seed)
            for fold in range(self.k)
            for run in self.fold_runs(fold)
            for seed in self.seeds
        ]
        return generative + [j for j in segmentation if j.needs] + [j for j in segmentation if not j.needs]

    # ---- data and checks -------------------------------------------------------------------------------
    def write_folds(self) -> None:
        """The k folds (a stratified subset of ``max_patients`` units first, when the scale says so), then the
        checks."""
        try:
            write_kfold(
                self.dataset_dir,
                self.out / "split",
                self.k,
                int(self.scale.get("split_seed", 0)),
                labels=self.labels,
                max_units=self.scale.get("max_patients"),
            )
        except FileExistsError as error:
            raise ValueError(
                f"{self.out} holds the folds of another dataset or split setting (folds, split_seed, max_patients); "
                f"use a new study folder ({error})"
            ) from error
        self.check_folds()

    def _entries(self, datalist: str | os.PathLike) -> list[dict]:
        path = Path(datalist)
        entries = json.loads(path.read_text())["training"]
        return [
            {**e, **{k: str((path.parent / e[k]).resolve()) for k in ("image", "label", "source_image") if e.get(k)}}
            for e in entries
        ]

    def check_folds(self) -> None:
        """Every case is in exactly one test fold; a fold's training and test images are disjoint."""
        folds = json.loads((self.out / "split" / "folds.json").read_text())
        tests = [case for fold in folds["folds"] for case in fold["test"]]
        if sorted(tests) != sorted(folds["cases"]) or len(set(tests)) != len(tests):
            raise RuntimeError(
                f"{self.out / 'split' / 'folds.json'}: the test folds do not cover every case exactly once"
            )
        for fold in range(self.k):
            train = {e["image"] for e in self._entries(self.fold_datalist(fold, "train"))}
            test = {e["image"] for e in self._entries(self.fold_datalist(fold, "test"))}
            if train & test or len(train) + len(test) != len(folds["cases"]):
                raise RuntimeError(f"fold {fold}: training and test images overlap or miss cases")

    def check_synthetic(self, fold: int) -> None:
        """The fold's synthetic datalist holds ``fold_variants`` variants of each of its training cases and nothing
        else."""
        train = {e["image"] for e in self._entries(self.fold_datalist(fold, "train"))}
        entries = self._entries(self.synthetic_datalist(fold))
        sources = [e.get("source_image") for e in entries]
        foreign = sorted({s for s in sources if s not in train}, key=str)
        if foreign:
            raise RuntimeError(
                f"fold {fold}: synthetic variants of images outside the fold's training cases: {foreign[:3]}"
            )
        short = sorted(s for s in train if sources.count(s) < self.fold_variants(fold))
        if short:
            raise RuntimeError(f"fold {fold}: fewer than {self.fold_variants(fold)} synthetic variants of {short[:3]}")

    def run(self) -> Path:
        """All steps, then the report; returns the report path (the scheduler records each invocation's wall time)."""
        from .emit_diff_study_report import write_emit_diff_report

        self.out.mkdir(parents=True, exist_ok=True)
        self.write_folds()
        self.run_jobs(self.jobs_plan())
        return write_emit_diff_report(self)
