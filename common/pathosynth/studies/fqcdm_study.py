"""The FQCDM study in one resumable command: Tab. 1–3 (image quality), Tab. 5 (ablation subset) and the three
downstream strategies of Sec. 5 (Fig. 4–6, Tab. 4) on ACDC.

    python -m pathosynth.cli fqcdm_study OUT --dataset_dir DATA/acdc --scale cpu

Steps (bundle workflow runs, scheduled and resumed by :class:`.bundle_study.BundleStudy`):

1. split by patient, stratified by ACDC group (``OUT/split``); the training cases are put in one seeded order,
   ``label_pool.json``. The "real" segmentation sets are its first ``n`` cases (``real_{n}.json``), as the paper
   uses a fixed small number of real images (100) next to synthetic ones.
2. training on all training cases: the VQ autoencoder with the dual-branch discriminator (stage 1), the latent
   label-guided DDPM (stage 2) and the pixel-space label-guided DDPM (baseline).
3. synthesis. Tab. 1–3: every method synthesises the label maps of the *test* cases (1 sample each; a seeded
   subset of ``quality_cases`` of them when the scale says so, ``quality_test.json``) and is compared with their
   real images. Downstream: FQCDM synthesises the first ``synthetic_pool`` label maps of
   ``label_pool.json``; a set of ``k`` synthetic cases is the first ``k`` of them in that order.
   Sampler comparison (issue 18, when the scale lists ``samplers``): the trained FQCDM model synthesises the same
   test label maps once per sampler setting (``num_inference_steps``, ``ddim_eta`` of ``inference.json``), scored
   as Tab. 1–3 against the first setting, the reference. A setting that names no sampler key is the bundle's
   default sampler, which the Tab. 1–3 FQCDM synthesis already ran: its outputs are reused, not made twice.
4. downstream segmentation (MONAI UNet, 2D, ``downstream_segmentation`` with ``acdc.json`` + ``unet.json``) per
   run and seed, scored on the real test cases: Tab. 4 (real / synthetic / both, with and without classic
   augmentation), Fig. 4 (real + ``ratio`` × real synthetic), Fig. 5 (synthetic only, several sizes), Fig. 6
   (context-encoder pretraining on synthetic images, then fine-tuning on ``n`` real cases, vs from scratch).
5. report (:mod:`.fqcdm_study_report`).

Scales: ``bundles/label_guided_latent_diffusion/configs/study/{cpu,ci,paper}.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.splits import write_split
from ..io.atomic import write_json
from .bundle_study import BundleStudy, StudyJob, slug

__all__ = ["QUALITY_METHODS", "SAMPLER_KEYS", "FqcdmStudy", "SamplerSetting", "SegmentationRun", "first_entries"]

# Tab. 1–3 method -> label_guided_latent_diffusion inference overlays and the training steps it needs.
QUALITY_METHODS: dict[str, tuple[list[str], list[str]]] = {
    "VQ reconstruction": (["inference_reconstruction.json"], ["train_autoencoder"]),
    "Pixel DDPM": (["inference_pixel.json"], ["train_pixel_ddpm"]),
    "FQCDM without quantisation": (["inference_no_quantisation.json"], ["train_autoencoder", "train_latent_ddpm"]),
    "FQCDM": ([], ["train_autoencoder", "train_latent_ddpm"]),
}


# the label_guided_latent_diffusion inference keys a sampler setting may set
SAMPLER_KEYS = ("num_inference_steps", "ddim_eta")


@dataclass(frozen=True)
class SamplerSetting:
    """One sampler of the comparison: a name and the ``inference.json`` keys it sets (none = the bundle's default)."""

    name: str
    overrides: dict = field(default_factory=dict, hash=False)


def sampler_settings(samplers, source) -> list[SamplerSetting]:
    """The scale's ``samplers`` list, checked before any work (``source`` names the scale file in errors): every
    entry a ``name`` (unique, and unique as a folder name) and only ``num_inference_steps`` (an integer >= 1 or null)
    and ``ddim_eta`` (a number >= 0 or null); the first entry is the reference."""
    if not isinstance(samplers, list):
        raise ValueError(f"study scale {source}: 'samplers' must be a list of settings, got {type(samplers).__name__}")
    settings, folders = [], {}
    for i, entry in enumerate(samplers):
        where = f"study scale {source}: samplers[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ValueError(f"{where} needs a non-empty 'name'")
        where += f" ({entry['name']!r})"
        unknown = sorted(set(entry) - {"name", *SAMPLER_KEYS})
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; a setting may set {list(SAMPLER_KEYS)}")
        steps, eta = entry.get("num_inference_steps"), entry.get("ddim_eta")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"{where}: num_inference_steps must be an integer >= 1 or null, got {steps!r}")
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0):
            raise ValueError(f"{where}: ddim_eta must be a number >= 0 or null, got {eta!r}")
        folder = slug(entry["name"])
        if folder in folders:
            raise ValueError(f"{where}: the name repeats {folders[folder]!r} (both are folder {folder!r})")
        folders[folder] = entry["name"]
        settings.append(SamplerSetting(entry["name"], {k: entry[k] for k in SAMPLER_KEYS if k in entry}))
    return settings


@dataclass(frozen=True)
class SegmentationRun:
    """One downstream training set-up: ``n_real`` first real cases + ``n_synthetic`` first synthetic ones."""

    n_real: int
    n_synthetic: int
    augment: bool = True
    pretrained: bool = False

    @property
    def name(self) -> str:
        parts = [f"real{self.n_real}"] if self.n_real else []
        parts += [f"syn{self.n_synthetic}"] if self.n_synthetic else []
        return "+".join(parts) + ("_aug" if self.augment else "_noaug") + ("_pretrained" if self.pretrained else "")


def first_entries(datalist: str | Path, k: int, order: list[str] | None = None, out: str | Path | None = None) -> Path:
    """Write the first ``k`` entries of a datalist (in ``order`` of their ``source_case_id`` when given, else as
    listed) next to it, so relative paths stay valid; an error when it holds fewer. Returns the new file."""
    path = Path(datalist)
    content = json.loads(path.read_text())
    entries = content["training"]
    if order is not None:
        rank = {case: i for i, case in enumerate(order)}
        missing = [e["case_id"] for e in entries if e.get("source_case_id") not in rank]
        if missing:
            raise ValueError(f"{path}: entries {missing[:3]} have no source_case_id in the given order")
        entries = sorted(entries, key=lambda e: (rank[e["source_case_id"]], e["case_id"]))
    if len(entries) < k:
        raise ValueError(f"{path} holds {len(entries)} cases, {k} were asked for")
    target = Path(out) if out else path.with_name(f"{path.stem}_first{k}.json")
    write_json(target, {**content, "description": f"the first {k} cases of {path.name}", "training": entries[:k]})
    return target


class FqcdmStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` is an ACDC-layout folder."""

    scale_bundle = "label_guided_latent_diffusion"
    generator = "label_guided_latent_diffusion"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.methods = self.scale_names("methods", QUALITY_METHODS)
        self.seeds = list(self.scale.get("seeds", [0]))
        self.n_real = int(self.scale["real_cases"])
        self.samplers = sampler_settings(self.scale.get("samplers", []), self.scale_path)

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def models_dir(self) -> str:
        return str(self.out / "models" / self.generator)

    def synthetic_dir(self, group: str, method: str) -> Path:
        return self.out / "synthetic" / group / slug(method)

    @property
    def pool_datalist(self) -> Path:
        return self.synthetic_dir("train", "FQCDM") / "datalist.json"

    def sampler_step(self, setting: SamplerSetting) -> str:
        """The synthesis step whose outputs score ``setting``: the Tab. 1–3 FQCDM synthesis when both run the bundle's
        default sampler (the setting sets no key, nor does the scale's synthesis), else the setting's own step."""
        shared = {**self.section("generative")[1], **self.section("synthesis")[1]}
        if "FQCDM" in self.methods and not setting.overrides and not set(SAMPLER_KEYS) & set(shared):
            return f"synth_test_{slug('FQCDM')}"
        return f"synth_sampler_{slug(setting.name)}"

    def sampler_dir(self, setting: SamplerSetting) -> Path:
        if self.sampler_step(setting) == f"synth_test_{slug('FQCDM')}":
            return self.synthetic_dir("test", "FQCDM")
        return self.synthetic_dir("samplers", setting.name)

    def real_datalist(self, n: int) -> str:
        return self.split_path(f"real_{n}")

    def synthetic_datalist(self, k: int) -> str:
        return str(self.pool_datalist.with_name(f"first_{k}.json"))

    def segmentation_dir(self, run: SegmentationRun, seed: int) -> Path:
        return self.out / "segmentation" / run.name / f"seed{seed}"

    @property
    def pretrained_dir(self) -> Path:
        return self.out / "models" / "context_encoder"

    # ---- plan ----------------------------------------------------------------------------------------
    def runs(self) -> dict[str, list[SegmentationRun]]:
        """Figure/table -> its runs (a run shared by two of them is trained once)."""
        r, ratios = self.n_real, self.scale.get("ratios", [])
        s_tab4 = int(round(max(ratios, default=1) * r))
        tab4 = [
            SegmentationRun(n_real, n_syn, augment)
            for n_real, n_syn in ((r, 0), (0, s_tab4), (r, s_tab4))
            for augment in (False, True)
        ]
        fig4 = [SegmentationRun(r, int(round(q * r))) for q in [0, *ratios]]
        fig5 = [SegmentationRun(0, k) for k in self.scale.get("synthetic_only_cases", [])]
        fig6 = [
            SegmentationRun(n, 0, pretrained=p)
            for n in self.scale.get("finetune_real_cases", [])
            for p in (False, True)
        ]
        return {"tab4": tab4, "fig4": fig4, "fig5": fig5, "fig6": fig6}

    def unique_runs(self) -> list[SegmentationRun]:
        return list(dict.fromkeys(run for runs in self.runs().values() for run in runs))

    def synthetic_pool_size(self) -> int:
        sizes = [run.n_synthetic for run in self.unique_runs()] + [int(self.scale.get("pretraining_cases", 0))]
        return max(sizes)

    def real_sizes(self) -> list[int]:
        return sorted({run.n_real for run in self.unique_runs() if run.n_real})

    def generator_job(
        self,
        name: str,
        configs: list[str],
        section: str,
        settings: dict,
        workflow: str = "run",
        needs: list[str] | None = None,
        finish=None,
    ) -> StudyJob:
        files, values = self.section("generative")
        extra_files, extra = self.section(section)
        return StudyJob(
            name,
            self.generator,
            [*configs, *files, *extra_files],
            {**values, **extra, **settings, "dataset_dir": None},
            workflow=workflow,
            needs=list(needs or []),
            finish=finish,
        )

    def training_jobs(self) -> list[StudyJob]:
        common = {
            "datalist": self.split_path("train"),
            "ckpt_dir": self.models_dir,
            "output_dir": str(self.out / "logs" / "tensorboard"),
        }
        jobs = [
            self.generator_job("train_autoencoder", ["train_autoencoder.json"], "autoencoder", common, "training"),
            self.generator_job(
                "train_latent_ddpm", ["train_diffusion.json"], "diffusion", common, "training", ["train_autoencoder"]
            ),
        ]
        if "Pixel DDPM" in self.methods:
            jobs.append(
                self.generator_job(
                    "train_pixel_ddpm",
                    ["train_diffusion.json", "train_diffusion_pixel.json"],
                    "pixel",
                    common,
                    "training",
                )
            )
        return jobs

    def denoiser_settings(self, section: str) -> dict:
        """The denoiser's architecture keys of a training section: inference must build the network training built."""
        return {k: v for k, v in self.section(section)[1].items() if k.startswith("unet_")}

    def synthesis_jobs(self) -> list[StudyJob]:
        jobs = []
        for method in self.methods:
            overlays, needs = QUALITY_METHODS[method]
            settings = {
                "datalist": self.split_path("quality_test"),
                "ckpt_dir": self.models_dir,
                "output_dir": str(self.synthetic_dir("test", method)),
                "num_samples_per_case": 1,
                "progress": False,
            }
            settings.update(self.denoiser_settings("pixel" if method == "Pixel DDPM" else "diffusion"))
            jobs.append(
                self.generator_job(
                    f"synth_test_{slug(method)}", ["inference.json", *overlays], "synthesis", settings, "run", needs
                )
            )
        pool = {
            "datalist": self.split_path("label_pool"),
            "max_cases": self.synthetic_pool_size(),
            "ckpt_dir": self.models_dir,
            "output_dir": str(self.pool_datalist.parent),
            "num_samples_per_case": 1,
            "progress": False,
            **self.denoiser_settings("diffusion"),
        }
        jobs.append(
            self.generator_job(
                "synth_train_FQCDM",
                ["inference.json"],
                "synthesis",
                pool,
                "run",
                ["train_autoencoder", "train_latent_ddpm"],
                finish=self.write_synthetic_subsets,
            )
        )
        return jobs

    def sampler_jobs(self) -> list[StudyJob]:
        """One synthesis of the Tab. 1–3 test label maps per sampler setting (none for a setting the FQCDM synthesis
        already ran), with the same trained model, seed and settings but the setting's sampler keys."""
        jobs = []
        for setting in self.samplers:
            name = self.sampler_step(setting)
            if not name.startswith("synth_sampler_"):
                continue
            settings = {
                "datalist": self.split_path("quality_test"),
                "ckpt_dir": self.models_dir,
                "output_dir": str(self.sampler_dir(setting)),
                "num_samples_per_case": 1,
                "progress": False,
                **self.denoiser_settings("diffusion"),
                **setting.overrides,
            }
            jobs.append(
                self.generator_job(
                    name, ["inference.json"], "synthesis", settings, "run", ["train_autoencoder", "train_latent_ddpm"]
                )
            )
        return jobs

    def segmentation_datalists(self, run: SegmentationRun) -> list[str]:
        return ([self.real_datalist(run.n_real)] if run.n_real else []) + (
            [self.synthetic_datalist(run.n_synthetic)] if run.n_synthetic else []
        )

    def segmentation_jobs(self) -> list[StudyJob]:
        files, settings = self.section("segmentation")
        jobs = []
        if any(run.pretrained for run in self.unique_runs()):
            _, pretraining = self.section("pretraining")
            shared = {
                k: v for k, v in settings.items() if not k.startswith("train#")
            }  # the network and data, not the segmenter's optimiser
            jobs.append(
                StudyJob(
                    "pretrain_context_encoder",
                    "downstream_segmentation",
                    ["pretrain_context_encoder.json", *files],
                    {
                        **shared,
                        **pretraining,
                        "train_datalists": [self.synthetic_datalist(int(self.scale["pretraining_cases"]))],
                        "seed": 0,
                        "ckpt_dir": str(self.pretrained_dir),
                        "output_dir": str(self.pretrained_dir),
                    },
                    workflow="training",
                    needs=["synth_train_FQCDM"],
                )
            )
        for seed in self.seeds:
            for run in self.unique_runs():
                needs = (["synth_train_FQCDM"] if run.n_synthetic else []) + (
                    ["pretrain_context_encoder"] if run.pretrained else []
                )
                values = {
                    **settings,
                    "train_datalists": self.segmentation_datalists(run),
                    "test_datalist": self.split_path("test"),
                    "seed": seed,
                    "augment": run.augment,
                    "output_dir": str(self.segmentation_dir(run, seed)),
                }
                if run.pretrained:
                    values["init_weights"] = str(self.pretrained_dir / "context_encoder.pt")
                jobs.append(
                    StudyJob(
                        f"segment_{run.name}_seed{seed}",
                        "downstream_segmentation",
                        ["train.json", *files],
                        values,
                        needs=needs,
                    )
                )
        return jobs

    # ---- data ----------------------------------------------------------------------------------------
    def write_split(self) -> None:
        """The patient split, the seeded order of the training cases, and the real subsets."""
        paths = write_split(
            self.dataset_dir,
            self.out / "split",
            float(self.scale.get("test_fraction", 0.2)),
            int(self.scale.get("split_seed", 0)),
        )
        train = json.loads(Path(paths["train"]).read_text())
        entries = sorted(train["training"], key=lambda e: e["case_id"])
        order = np.random.default_rng(int(self.scale.get("split_seed", 0))).permutation(len(entries))
        pool = {
            **train,
            "description": "the training cases in the study's seeded order",
            "training": [entries[i] for i in order],
        }
        write_json(self.split_path("label_pool"), pool)
        for n in self.real_sizes():
            first_entries(self.split_path("label_pool"), n, out=self.real_datalist(n))
        test = json.loads(Path(paths["test"]).read_text())
        n_quality = int(self.scale.get("quality_cases") or len(test["training"]))
        chosen = np.random.default_rng([int(self.scale.get("split_seed", 0)), 1]).permutation(len(test["training"]))[
            :n_quality
        ]
        write_json(
            self.split_path("quality_test"),
            {
                **test,
                "description": f"{n_quality} seeded test cases for Tab. 1–3",
                "training": [test["training"][i] for i in sorted(chosen)],
            },
        )

    def pool_order(self) -> list[str]:
        return [e["case_id"] for e in json.loads(Path(self.split_path("label_pool")).read_text())["training"]]

    def write_synthetic_subsets(self) -> None:
        """``first_{k}.json``: the first ``k`` synthetic cases in the label pool's order, for every size used."""
        sizes = {run.n_synthetic for run in self.unique_runs() if run.n_synthetic} | {
            int(self.scale.get("pretraining_cases", 0))
        }
        for k in sorted(sizes - {0}):
            first_entries(self.pool_datalist, k, order=self.pool_order(), out=self.synthetic_datalist(k))

    def run(self) -> Path:
        """All phases, then the report; returns the report path."""
        from .fqcdm_study_report import write_fqcdm_report

        self.out.mkdir(parents=True, exist_ok=True)
        self.write_split()
        self.run_jobs(self.training_jobs() + self.synthesis_jobs() + self.sampler_jobs() + self.segmentation_jobs())
        return write_fqcdm_report(self)
