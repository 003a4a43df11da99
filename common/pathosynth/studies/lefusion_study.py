"""The LeFusion study in one resumable command: Tab. 2 (image similarity) and Tab. 1 (downstream Dice).

    python -m pathosynth.cli lefusion_study OUT --dataset_dir DATA/emidec --scale cpu

Every step is a bundle workflow run, scheduled and resumed by :class:`.bundle_study.BundleStudy`; in order:

1. split: by case, stratified normal / pathological (``OUT/split``).
2. training on the training pathological cases only: LeFusion-J, LeFusion-S (MI, PMO), RePaint,
   Cond-Diffusion texture models and DiffMask (the hand-crafted baseline is fitted, not trained).
3. synthesis: Tab. 2 -- every method re-textures the real masks of the *test* pathological cases; P' --
   every method re-textures the training pathological cases (1 per case); N'' -- DiffMask masks +
   LeFusion-J textures on the training normal cases (``n_double_prime_samples`` per case, N' is the
   first ``n_prime_samples`` of them: the same seeds give the same cases).
4. downstream segmentation (DynUNet, nnU-Net plan) per training mix and seed, scored on the real test cases.
5. report (:mod:`.lefusion_study_report`).

Scales are JSON files in ``bundles/lesion_inpainting/configs/study/`` (``cpu``: 74-82 min measured on 2 cores; ``ci``:
the test suite's; ``paper``: the papers' settings for a GPU).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..io.atomic import write_json
from .bundle_study import BundleStudy, StudyJob, default_bundles_dir, slug

__all__ = ["METHODS", "TEXTURE_MODELS", "LeFusionStudy", "StudyJob", "default_bundles_dir", "training_mixes"]

# Tab. 1/2 method -> lesion_inpainting inference overlays (LeFusion-J is the bundle's default).
METHODS: dict[str, list[str]] = {
    "Hand-crafted": ["inference_handcrafted.json"],
    "Cond-Diffusion": ["inference_cond_diffusion.json"],
    "RePaint": ["inference_repaint.json"],
    "LeFusion-S": ["inference_lefusion_s.json"],
    "LeFusion-J": [],
}
# checkpoint stem -> (lesion_inpainting train overlays, extra settings, the methods that need it)
TEXTURE_MODELS: dict[str, tuple[list[str], dict, tuple[str, ...]]] = {
    "lefusion_j": ([], {}, ("LeFusion-J",)),
    "lefusion_s_MI": (["train_lefusion_s.json"], {"lesion_class": "MI"}, ("LeFusion-S",)),
    "lefusion_s_PMO": (["train_lefusion_s.json"], {"lesion_class": "PMO"}, ("LeFusion-S",)),
    "repaint": (["train_repaint.json"], {}, ("RePaint",)),
    "cond_diffusion": (["train_cond_diffusion.json"], {}, ("Cond-Diffusion",)),
}
# lesion_inpainting setting -> the pipeline's name for the same setting of its LeFusion-J texture model
PIPELINE_TEXTURE_KEYS = {
    "roi_size": "texture_roi_size",
    "num_train_timesteps": "texture_num_train_timesteps",
    "num_inference_steps": "texture_num_inference_steps",
    "jump_length": "texture_jump_length",
    "jump_n_sample": "texture_jump_n_sample",
    "network_def#channels": "texture_network_channels",
    "network_def#num_res_blocks": "texture_network_res_blocks",
    "network_def#attention_levels": "texture_network_attention_levels",
    "network_def#num_head_channels": "texture_network_head_channels",
    "network_def#norm_num_groups": "texture_network_norm_groups",
}


def training_mixes(real: str, p_prime: Mapping[str, str], n_prime: str, n_double_prime: str) -> dict[str, list[str]]:
    """Tab. 1 rows: training mix name -> datalists (real pathological first)."""
    mixes = {"P": [real]}
    mixes.update({f"P+P′ {method}": [real, datalist] for method, datalist in p_prime.items()})
    mixes["P+N′ (LeFusion-J+DiffMask)"] = [real, n_prime]
    mixes["P+N″ (LeFusion-J+DiffMask)"] = [real, n_double_prime]
    if "LeFusion-J" in p_prime:
        mixes["P+P′+N″ (LeFusion-J+DiffMask)"] = [real, p_prime["LeFusion-J"], n_double_prime]
    return mixes


class LeFusionStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` is an EMIDEC-layout folder.

    The scale file may name a subset of ``METHODS`` under ``"methods"`` (the CI scale does, to stay short);
    only the texture models those methods need are trained.
    """

    scale_bundle = "lesion_inpainting"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.methods = list(self.scale.get("methods", METHODS))
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"study scale {self.scale_path}: unknown methods {unknown}; known: {list(METHODS)}")

    # ---- paths ---------------------------------------------------------------------------------------
    def synthetic_dir(self, group: str, method: str) -> Path:
        return self.out / "synthetic" / group / slug(method)

    def segmentation_dir(self, mix: str, seed: int) -> Path:
        return self.out / "segmentation" / slug(mix) / f"seed{seed}"

    @property
    def texture_ckpt_dir(self) -> str:
        return str(self.out / "models" / "lesion_inpainting")

    @property
    def mask_ckpt_dir(self) -> str:
        return str(self.out / "models" / "lesion_mask_diffusion")

    # ---- plan ----------------------------------------------------------------------------------------
    def training_jobs(self) -> list[StudyJob]:
        files, inpainting = self.section("inpainting")
        common = {
            "datalist": self.split_path("train_pathological"),
            "ckpt_dir": self.texture_ckpt_dir,
            "output_dir": str(self.out / "logs" / "tensorboard"),
        }
        needed = [
            stem
            for stem, (_, _, users) in TEXTURE_MODELS.items()
            if stem == "lefusion_j" or set(users) & set(self.methods)
        ]
        jobs = [
            StudyJob(
                f"train_{stem}",
                "lesion_inpainting",
                ["train.json", *TEXTURE_MODELS[stem][0], *files],
                {**inpainting, **TEXTURE_MODELS[stem][1], **common},
            )
            for stem in needed
        ]  # N'' always uses LeFusion-J
        files, masks = self.section("masks")
        masks.update(
            {
                "datalist": self.split_path("train_pathological"),
                "ckpt_dir": self.mask_ckpt_dir,
                "output_dir": str(self.out / "logs" / "tensorboard"),
            }
        )
        jobs.append(StudyJob("train_diffmask", "lesion_mask_diffusion", ["train.json", *files], masks))
        return jobs

    def texture_job(self, group: str, method: str, datalist: str) -> StudyJob:
        files, settings = self.section("inpainting")
        settings.update(
            {
                "datalist": datalist,
                "ckpt_dir": self.texture_ckpt_dir,
                "output_dir": str(self.synthetic_dir(group, method)),
                "num_samples_per_case": 1,
                "progress": False,
            }
        )
        if method == "Hand-crafted":  # fitted on the training lesions, never on the cases it re-textures
            fit = self.split_path("train_pathological")
            settings["texture_fit_cases"] = (
                f"$pathosynth.data.cases.load_cases(datalist={fit!r}, labels=@labels, "
                "lesion_classes=@lesion_classes, select='with_lesion')"
            )
        needs = [f"train_{stem}" for stem, (_, _, users) in TEXTURE_MODELS.items() if method in users]
        return StudyJob(
            f"synth_{group}_{slug(method)}",
            "lesion_inpainting",
            ["inference.json", *METHODS[method], *files],
            settings,
            needs=needs,
        )

    def synthesis_jobs(self) -> list[StudyJob]:
        jobs = [self.texture_job("tab2", m, self.split_path("test_pathological")) for m in self.methods]
        jobs += [self.texture_job("P_prime", m, self.split_path("train_pathological")) for m in self.methods]
        _, inpainting = self.section("inpainting")
        files, masks = self.section("masks")
        pipeline = {PIPELINE_TEXTURE_KEYS[k]: v for k, v in inpainting.items() if k in PIPELINE_TEXTURE_KEYS}
        pipeline.update(
            {
                **masks,
                "datalist": self.split_path("train_normal"),
                "select": "normal",
                "ckpt_dir": self.mask_ckpt_dir,
                "texture_ckpt_dir": self.texture_ckpt_dir,
                "progress": False,
                "output_dir": str(self.synthetic_dir("N_double_prime", "LeFusion-J+DiffMask")),
                "num_samples_per_case": int(self.scale.get("n_double_prime_samples", 5)),
            }
        )
        jobs.append(
            StudyJob(
                "synth_N_double_prime",
                "lesion_mask_diffusion",
                ["pipeline.json", *files],
                pipeline,
                needs=["train_lefusion_j", "train_diffmask"],
                finish=self.write_n_prime,
            )
        )
        return jobs

    def mixes(self) -> dict[str, list[str]]:
        p_prime = {m: str(self.synthetic_dir("P_prime", m) / "datalist.json") for m in self.methods}
        n_double = self.synthetic_dir("N_double_prime", "LeFusion-J+DiffMask")
        return training_mixes(
            self.split_path("train_pathological"),
            p_prime,
            str(n_double / "n_prime.json"),
            str(n_double / "datalist.json"),
        )

    def segmentation_jobs(self) -> list[StudyJob]:
        files, settings = self.section("segmentation")
        n_double = self.synthetic_dir("N_double_prime", "LeFusion-J+DiffMask")
        makers = {
            str(self.synthetic_dir("P_prime", m) / "datalist.json"): f"synth_P_prime_{slug(m)}" for m in self.methods
        }
        makers.update(
            {
                str(n_double / "datalist.json"): "synth_N_double_prime",
                str(n_double / "n_prime.json"): "synth_N_double_prime",
            }
        )
        return [
            StudyJob(
                f"segment_{slug(mix)}_seed{seed}",
                "downstream_segmentation",
                ["train.json", *files],
                {
                    **settings,
                    "train_datalists": datalists,
                    "test_datalist": self.split_path("test"),
                    "seed": seed,
                    "output_dir": str(self.segmentation_dir(mix, seed)),
                },
                needs=sorted({makers[d] for d in datalists if d in makers}),
            )
            for seed in self.scale.get("seeds", [0])
            for mix, datalists in self.mixes().items()
        ]

    # ---- run ----------------------------------------------------------------------------------------
    def write_n_prime(self) -> None:
        """N' = the first ``n_prime_samples`` synthetic variants of every normal case (a subset of N'')."""
        folder = self.synthetic_dir("N_double_prime", "LeFusion-J+DiffMask")
        content = json.loads((folder / "datalist.json").read_text())
        keep = {f"_syn{k:02d}" for k in range(int(self.scale.get("n_prime_samples", 2)))}
        content["training"] = [e for e in content["training"] if e["case_id"][-6:] in keep]
        content["description"] = f"N': the first {len(keep)} synthetic variants per normal case of datalist.json (N'')"
        write_json(folder / "n_prime.json", content)

    def run(self) -> Path:
        """All phases, then the report; returns the report path."""
        from .lefusion_study_report import write_lefusion_report

        self.write_case_split()
        self.run_jobs(self.training_jobs() + self.synthesis_jobs() + self.segmentation_jobs())
        return write_lefusion_report(self)
