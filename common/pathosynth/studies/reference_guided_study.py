"""The reference-guided DDPM's Tab. 1 in one resumable command: does adding synthetic lesion slices to real ones help
a classifier find lesions on real held-out data?

    python -m pathosynth.cli reference_guided_study OUT --dataset_dir DATA/emidec --scale cpu

The paper (Krishna et al., Tab. 1) trains a cancer / no-cancer classifier on real mammograms alone and with 2500,
5000, ... synthetic ones and reports AUC/F1 on real test images. Here, on EMIDEC (what we have; the method is
modality-agnostic), a 2D slice's class is "holds a lesion label (MI/PMO)" vs "no lesion".

Steps (bundle workflow runs, scheduled and resumed by :class:`.bundle_study.BundleStudy`):

1. split by case, stratified normal / pathological (``OUT/split``); the real train and test cases become classified
   PNG slices (``OUT/slices/real_train``, ``OUT/slices/real_test``,
   :func:`~pathosynth.data.slice_classes.write_lesion_slices`), cropped to the DDPM's field of view as the synthetic
   ones are (outside it a synthetic image is empty).
2. ``train_ddpm``: the unconditional DDPM (``reference_guided_ddpm`` train.json) on the training cases only.
3. ``synthesise``: inference.json with the training *normal* cases as anatomy references and patches cut from the
   training *pathological* cases; its image + label pairs become classified slices (``OUT/slices/synthetic``) and
   nested subsets ``first_{k}.json``: the first ``fraction`` of them for every fraction of the scale.
4. ``classify_<mix>`` / ``evaluate_<mix>``: class_conditional_ddpm's train_classifier.json (MONAI classifier, k-fold
   CV, early stopping, AdamW) on real only and on real + each synthetic subset; evaluate.json scores every fold on
   the real test slices (AUC, F1, accuracy, precision, recall).
5. report: ``OUT/reference_guided_study.json`` (every number, named as each study names its results JSON, so the
   docs folder keeps the file ``pathosynth.cli report`` renders), ``OUT/reference_guided_study.md`` rendered from it
   and ``OUT/scores_vs_synthetic.png`` (AUC and F1 against the synthetic amount).

No test case reaches the DDPM, the patch bank, the synthesis or a classifier's training set.
Scales: ``bundles/reference_guided_ddpm/configs/study/{ci,cpu,paper}.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..bundle_configs import config_files
from ..data.cases import load_cases
from ..data.labels import class_values
from ..data.slice_classes import write_lesion_slices
from ..data.splits import write_split
from ..evaluation.figures import pyplot, save_figure
from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from ..markdown_tables import fixed, markdown_table, mean_std
from .bundle_study import BundleStudy, StudyJob
from .fqcdm_study import first_entries
from .results_markdown import provenance_markdown, wall_time_markdown

__all__ = [
    "GENERATE_AND_CLASSIFY_PHASES",
    "METRICS",
    "ReferenceGuidedStudy",
    "classifier_jobs",
    "render_reference_guided_report",
]

METRICS = ("auc", "f1", "accuracy", "precision", "recall")
# wall-time phases (name, step-name prefix) of a study that trains a generator, synthesises, then classifies
GENERATE_AND_CLASSIFY_PHASES = (
    ("DDPM training", "train_ddpm"),
    ("synthesis", "synthesise"),
    ("classifier training", "classify_"),
    ("evaluation", "evaluate_"),
)
CLASSIFIER_BUNDLE = "class_conditional_ddpm"  # its train_classifier.json / evaluate.json score every training mix


def classifier_jobs(mix: str, files: list[str], values: dict, needs: list[str]) -> list[StudyJob]:
    """``classify_<mix>`` (k-fold training of the classifier bundle with ``values``) and ``evaluate_<mix>`` (its fold
    models on the real test split), the second after the first."""
    return [
        StudyJob(f"classify_{mix}", CLASSIFIER_BUNDLE, ["train_classifier.json", *files], values, "training", needs),
        StudyJob(
            f"evaluate_{mix}",
            CLASSIFIER_BUNDLE,
            ["train_classifier.json", "evaluate.json", *files],
            values,
            "evaluating",
            [f"classify_{mix}"],
        ),
    ]


class ReferenceGuidedStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` is an EMIDEC-layout folder."""

    scale_bundle = "reference_guided_ddpm"
    generator = "reference_guided_ddpm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fractions = [float(f) for f in self.scale.get("synthetic_fractions", [0.25, 0.5, 1.0])]
        if not all(0 < f <= 1 for f in self.fractions):
            raise ValueError(
                f"study scale {self.scale_path}: synthetic_fractions must lie in (0, 1], got {self.fractions}"
            )
        self.labels = dict(self.scale.get("labels", {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}))
        self.lesion_classes = list(self.scale.get("lesion_classes", ["MI", "PMO"]))
        self.slice_size = [int(s) for s in self.scale.get("slice_size", [64, 64])]

    # ---- paths ---------------------------------------------------------------------------------------
    def slices(self, name: str) -> Path:
        return self.out / "slices" / name / "datalist.json"

    def mixes(self) -> dict[str, float]:
        """Training mix name -> fraction of the synthetic slices added to the real ones (0: real only)."""
        return {"real": 0.0, **{f"real+synthetic{round(f * 100):03d}": f for f in self.fractions}}

    def synthetic_subset(self, fraction: float) -> Path:
        return self.slices("synthetic").with_name(f"first_{round(fraction * 100):03d}pct.json")

    def classification_dir(self, mix: str) -> Path:
        return self.out / "classification" / mix

    # ---- data ----------------------------------------------------------------------------------------
    def write_split(self) -> dict[str, str]:
        """The case split and the real slices (written once; a rerun keeps them)."""
        paths = write_split(
            self.dataset_dir,
            self.out / "split",
            float(self.scale.get("test_fraction", 0.25)),
            int(self.scale.get("split_seed", 0)),
            labels=self.labels,
            lesion_classes=self.lesion_classes,
        )
        for name in ("train", "test"):
            if not self.slices(f"real_{name}").exists():
                self.export_slices(paths[name], f"real_{name}", f"real {name} cases of {self.dataset_dir}")
        return paths

    def export_slices(self, datalist: str | Path, name: str, description: str) -> Path:
        cases = load_cases(None, str(datalist), labels=self.labels, lesion_classes=self.lesion_classes, select="all")
        return write_lesion_slices(
            cases,
            self.slices(name).parent,
            class_values(self.labels, self.lesion_classes),
            self.slice_size,
            description,
            fov_size=self.generator_fov(),
        )

    def generator_fov(self) -> list[int]:
        """The DDPM's in-plane field of view as its training run resolves it (train.json, the scale's overlays and
        settings): real slices are cropped to it so that they show the region the synthetic ones do."""
        from monai.bundle import ConfigParser

        files, values = self.generator_settings("train")
        configs = self.bundles / self.generator / "configs"
        parser = ConfigParser()
        parser.read_config([str(f) for f in config_files(configs, ["train.json", *files])])
        parser.update(values)
        return [int(s) for s in parser.get_parsed_content("fov_size")]

    def write_synthetic_slices(self) -> None:
        """Slices of the synthetic pairs (once), then their subsets."""
        if not self.slices("synthetic").exists():
            self.export_slices(
                self.out / "synthetic" / "datalist.json", "synthetic", "reference-guided synthetic training pairs"
            )
        self.write_synthetic_subsets()

    def write_synthetic_subsets(self) -> None:
        """``first_NNNpct.json``: the first ``fraction`` of the synthetic slices as listed, so a larger amount only adds
        slices to a smaller one (the curve's points differ in amount, not in which slices were drawn)."""
        total = len(json.loads(self.slices("synthetic").read_text())["training"])
        for fraction in self.fractions:
            first_entries(
                self.slices("synthetic"), max(1, int(round(fraction * total))), out=self.synthetic_subset(fraction)
            )

    # ---- plan ----------------------------------------------------------------------------------------
    def generator_settings(self, section: str) -> tuple[list[str], dict]:
        files, values = self.section("generative")
        extra_files, extra = self.section(section)
        return [*files, *extra_files], {
            **values,
            **extra,
            "dataset_dir": None,
            "ckpt_dir": str(self.out / "models" / "ddpm"),
        }

    def jobs_plan(self) -> list[StudyJob]:
        files, settings = self.generator_settings("train")
        jobs = [
            StudyJob(
                "train_ddpm",
                self.generator,
                ["train.json", *files],
                {
                    **settings,
                    "datalist": self.split_path("train"),
                    "output_dir": str(self.out / "logs" / "tensorboard"),
                },
                "training",
            )
        ]
        files, settings = self.generator_settings("synthesis")
        network = {k: v for k, v in self.section("generative")[1].items() if k.startswith("unet_")}
        jobs.append(
            StudyJob(
                "synthesise",
                self.generator,
                ["inference.json", *files],
                {
                    **settings,
                    **network,
                    "datalist": self.split_path("train_normal"),
                    "patch_datalist": self.split_path("train_pathological"),
                    "output_dir": str(self.out / "synthetic"),
                    "progress": False,
                },
                needs=["train_ddpm"],
                finish=self.write_synthetic_slices,
            )
        )
        files, settings = self.section("classifier")
        for mix, fraction in self.mixes().items():
            sources = [str(self.slices("real_train"))] + ([str(self.synthetic_subset(fraction))] if fraction else [])
            values = {
                **settings,
                "class_names": ["no lesion", "lesion"],
                "training_data": mix,
                "train_sources": sources,
                "dataset_dir": str(self.slices("real_test")),
                "synthetic_data": sources[-1],
                "ckpt_dir": str(self.out / "models" / "classifiers"),
                "output_dir": str(self.classification_dir(mix)),
            }
            jobs += classifier_jobs(mix, files, values, ["synthesise"] if fraction else [])
        return jobs

    # ---- report --------------------------------------------------------------------------------------
    def scores(self) -> list[dict]:
        """One row per training mix and classifier: synthetic amount, mean ± std over folds of each metric, and each
        fold's scores and early-stopping epochs (its checkpoint path, a machine-local file, is left out)."""
        rows = []
        for mix, fraction in self.mixes().items():
            n_synthetic = len(json.loads(self.synthetic_subset(fraction).read_text())["training"]) if fraction else 0
            for path in sorted(self.classification_dir(mix).glob(f"{mix}_*.json")):
                report = json.loads(path.read_text())
                rows.append(
                    {
                        "mix": mix,
                        "synthetic_fraction": fraction,
                        "n_synthetic": n_synthetic,
                        "classifier": report["classifier"],
                        "n_train": report["training"]["num_images"],
                        "n_test": report["num_test_images"],
                        **{m: report["mean"][m] for m in METRICS},
                        **{f"{m}_std": report["std"][m] for m in METRICS},
                        **{f"ensemble_{m}": report["ensemble"][m] for m in METRICS},
                        "folds": [{k: v for k, v in fold.items() if k != "checkpoint"} for fold in report["folds"]],
                    }
                )
        return rows

    def write_report(self) -> Path:
        """``OUT/reference_guided_study.json`` (every number of the report) and ``OUT/reference_guided_study.md``
        rendered from it alone (:func:`render_reference_guided_report`), + ``OUT/scores_vs_synthetic.png``."""
        rows = self.scores()
        results = as_results(
            {
                "study": "reference_guided_study",
                "scale": self.scale.get("name", self.scale_path.stem),
                "scale_settings": self.scale,
                "provenance": self.provenance("reference_guided_study"),
                "dataset_dir": str(self.dataset_dir),
                "split": json.loads((self.out / "split" / "split.json").read_text()),
                "slice_class_counts": {
                    name: json.loads(self.slices(name).read_text())["class_counts"]
                    for name in ("real_train", "real_test", "synthetic")
                },
                "scores": rows,
                "step_seconds": self.step_timings(),
                "wall_time": self.wall_time(GENERATE_AND_CLASSIFY_PHASES, "reference_guided_study.json"),
            }
        )
        write_results(self.out / "reference_guided_study.json", results)
        with atomic_path(self.out / "reference_guided_study.md") as tmp:
            tmp.write_text(render_reference_guided_report(results))
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(7, 3))
        for axis, metric in zip(axes, ("auc", "f1")):
            for classifier in sorted({r["classifier"] for r in rows}):
                own = sorted((r for r in rows if r["classifier"] == classifier), key=lambda r: r["n_synthetic"])
                axis.errorbar(
                    [r["n_synthetic"] for r in own],
                    [r[metric] for r in own],
                    [r[metric + "_std"] for r in own],
                    marker="o",
                    capsize=3,
                    label=classifier,
                )
            axis.set_xlabel("synthetic slices added to the real ones")
            axis.set_ylabel(metric.upper())
            axis.legend(fontsize=7)
        save_figure(fig, self.out / "scores_vs_synthetic.png")
        return self.out / "reference_guided_study.md"

    def run(self) -> Path:
        """All steps, then the report; returns the report path."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.write_split()
        self.run_jobs(self.jobs_plan())
        return self.write_report()


def render_reference_guided_report(results: Mapping) -> str:
    """The generated Markdown of the reference-guided study from its results JSON alone (no discussion)."""
    rows, counts, split = results["scores"], results["slice_class_counts"], results["split"]
    header = ("training mix", "synthetic slices", "classifier", *METRICS)

    def row_label(r: Mapping) -> tuple:
        return r["mix"], r["n_synthetic"], r["classifier"]

    lines = [
        f"# Reference-guided DDPM: lesion classifier on real vs real + synthetic slices (scale {results['scale']})",
        "",
        provenance_markdown(results["provenance"]),
        "",
        f"Split by case, stratified normal / pathological (seed {split.get('seed')}): "
        f"{len(split['train'])} training cases, "
        f"{len(split['test'])} test cases. The DDPM, the patch bank and every classifier see training cases only.",
        "Slice counts [no lesion, lesion]: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".",
        "",
        "## Tab. 1 analogue",
        "",
        "Mean ± std over the cross-validation folds, each fold's model scored on the real held-out test slices:",
        "",
        *markdown_table(
            header,
            ((*row_label(r), *(mean_std(r[m], r[m + "_std"], 3) for m in METRICS)) for r in rows),
        ),
        "",
        "The fold ensemble (mean softmax of the fold models) on the same test slices:",
        "",
        *markdown_table(header, ((*row_label(r), *(fixed(r["ensemble_" + m], 3) for m in METRICS)) for r in rows)),
    ]
    lines += ["", "![scores](scores_vs_synthetic.png)", "", wall_time_markdown(results["wall_time"]), ""]
    return "\n".join(lines)
