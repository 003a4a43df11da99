"""The FQCDM study report: Tab. 1–3 and the Tab. 5 subset as one image-quality table, the sampler comparison (quality
against network calls, when the scale lists samplers), Tab. 4 and Fig. 4–6 as downstream Dice, an example panel;
Markdown + JSON, numbers read from the study folder.

Downstream numbers aggregate as in :mod:`.lefusion_study_report`: the mean over test cases gives one Dice per (run,
seed, class); "mean Dice" averages RV, myocardium and LV (the paper's "average Dice"); tables show mean ± sample std
over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..evaluation.figures import image_row, pyplot, save_figure
from ..evaluation.synthesis_quality import (
    centred_box,
    synthesis_quality,
    synthesis_quality_markdown,
    synthesis_quality_report,
)
from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from ..markdown_tables import fixed, markdown_table, number, spread_cell
from .repeats import repeat_summary, seed_summary
from .results_markdown import example_markdown, provenance_markdown, wall_time_markdown

__all__ = [
    "ACDC_CLASSES",
    "network_calls",
    "render_fqcdm_report",
    "run_summary",
    "sampler_comparison",
    "write_fqcdm_report",
]

ACDC_CLASSES = ("RV", "myocardium", "LV")
# Tab. 5 columns: which FQCDM blocks a quality method has (FDGB: latent diffusion, FQB: quantisation, DBD: dual-branch
# discriminator in the autoencoder's training)
ABLATION = {
    "VQ reconstruction": (False, True, True),
    "FQCDM without quantisation": (True, False, True),
    "FQCDM": (True, True, True),
}


def run_summary(score_files: Sequence[Path]) -> dict:
    """Per class and ``"mean"`` (over the classes, per seed): ``{"mean", "std", "n_seeds", "per_seed"}``."""
    summary = seed_summary(score_files, "dice", ACDC_CLASSES)
    per_class = [summary[c]["per_seed"] for c in ACDC_CLASSES]
    n = min(len(v) for v in per_class)
    per_seed = (
        [float(np.mean([v[i] for v in per_class])) for i in range(n)] if all(len(v) == n for v in per_class) else []
    )
    summary["mean"] = repeat_summary(per_seed)
    return summary


def _cell(stats: Mapping) -> str:
    """A Dice summary over seeds, ×100 with one decimal."""
    return spread_cell(stats, "n_seeds", 1, 100)


def _row(label: str, summary: Mapping) -> tuple:
    return (label, _cell(summary["mean"]), *(_cell(summary[c]) for c in ACDC_CLASSES), summary["mean"]["n_seeds"])


HEADER = ("training set", "mean Dice", *(f"{c} Dice" for c in ACDC_CLASSES), "seeds")


def _tab4_label(run: Mapping) -> str:
    kind = {
        (True, False): "Real images",
        (False, True): "Synthetic images",
        (True, True): "Synthetic images + Real images",
    }[(bool(run["n_real"]), bool(run["n_synthetic"]))]
    return (
        f"{kind}{' + Data augmentation' if run['augment'] else ''} "
        f"({run['n_real']} real, {run['n_synthetic']} synthetic)"
    )


def _curves(path: Path, study, summaries: Mapping[str, dict]) -> None:
    """Fig. 4 (mean Dice vs synthetic/real ratio), Fig. 5 (vs synthetic-only size), Fig. 6 (vs real fine-tuning
    size)."""
    plt = pyplot()

    runs = study.runs()
    panels = [
        ("fig4", "Fig. 4: real + synthetic", "synthetic / real ratio", lambda r: r.n_synthetic / max(r.n_real, 1)),
        ("fig5", "Fig. 5: synthetic only", "synthetic cases", lambda r: r.n_synthetic),
        ("fig6", "Fig. 6: pretraining + fine-tuning", "real cases for fine-tuning", lambda r: r.n_real),
    ]
    panels = [p for p in panels if runs.get(p[0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for axis, (key, title, xlabel, x_of) in zip(axes[0], panels):
        groups = {
            "pretrained on synthetic (context encoder)": [r for r in runs[key] if r.pretrained],
            "from scratch" if key == "fig6" else "": [r for r in runs[key] if not r.pretrained],
        }
        for label, members in groups.items():
            members = sorted((r for r in members if summaries[r.name]["mean"]["n_seeds"]), key=x_of)
            if not members:
                continue
            x = [x_of(r) for r in members]
            y = [summaries[r.name]["mean"]["mean"] * 100 for r in members]
            e = [np.nan_to_num(summaries[r.name]["mean"]["std"]) * 100 for r in members]
            axis.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label or None)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel("mean Dice ×100", fontsize=8)
        axis.tick_params(labelsize=7)
        if key == "fig6":
            axis.legend(fontsize=7)
    save_figure(fig, path)


def _example_panel(path: Path, study, methods: Sequence[str], fov_size: Sequence[int]) -> str | None:
    """real image | label | each method, on the mid-ventricular slice of the first test case."""
    from ..io.nifti import read_nifti

    datalists = {m: study.synthetic_dir("test", m) / "datalist.json" for m in methods}
    if not datalists or not all(p.exists() for p in datalists.values()):
        return None
    entries = {m: json.loads(p.read_text())["training"] for m, p in datalists.items()}
    first = entries[methods[0]][0]
    base = datalists[methods[0]].parent
    label = np.asarray(read_nifti(base / first["label"])[0])
    z = int(np.argmax([(label[..., k] > 0).sum() for k in range(label.shape[-1])]))
    rows, cols = centred_box(label.shape, fov_size)
    source = Path(first["source_image"])
    real = np.asarray(read_nifti(source if source.is_absolute() else base / source)[0], dtype=np.float32)
    low, high = float(real.min()), float(real.max())
    panels = [("real image", real[rows, cols, z], "gray"), ("label map", label[rows, cols, z], "viridis")]
    for m in methods:
        entry = next(e for e in entries[m] if e["source_case_id"] == first["source_case_id"])
        image = np.asarray(read_nifti(datalists[m].parent / entry["image"])[0], dtype=np.float32)
        panels.append((m, image[rows, cols, z], "gray"))
    image_row(path, panels, (low, high), label_max=3)
    return f"test case {first['source_case_id']}, slice {z}"


def _recorded_synthesis(study) -> dict:
    """The synthesis settings (fov_size, image_size, ...) as the FQCDM test synthesis recorded them in provenance."""
    datalist = study.synthetic_dir("test", "FQCDM") / "datalist.json"
    entries = json.loads(datalist.read_text())["training"] if datalist.exists() else []
    if not entries:
        raise FileNotFoundError(f"{datalist} holds no synthetic case: run the study's synthesis first")
    return json.loads((datalist.parent / entries[0]["provenance"]).read_text())["synthesis"]


def network_calls(datalist: str | Path) -> dict:
    """What the sampler did for a synthetic set, from its cases' provenance: network calls per slice (the synthesiser
    records one per slice and reverse step), the cases and slices synthesised, and the sampler settings recorded (one
    set: a folder holds the outputs of one sampler)."""
    import nibabel as nib

    datalist = Path(datalist)
    calls, slices, recorded = 0, 0, None
    entries = json.loads(datalist.read_text())["training"]
    for entry in entries:
        synthesis = json.loads((datalist.parent / entry["provenance"]).read_text())["synthesis"]
        shape = nib.load(datalist.parent / entry["label"]).shape
        slices += shape[2] if len(shape) == 3 else 1
        calls += int(synthesis["network_evaluations"])
        sampler = {k: synthesis.get(k) for k in ("step", "eta", "num_inference_steps", "num_train_timesteps")}
        if recorded not in (None, sampler):
            raise ValueError(f"{datalist}: its cases were made by different samplers ({recorded} and {sampler})")
        recorded = sampler
    if not slices:
        raise FileNotFoundError(f"{datalist} holds no synthetic case: run the study's sampler synthesis first")
    return {
        "network_calls_per_slice": calls / slices,
        "cases": sorted(e["source_case_id"] for e in entries),
        "slices": slices,
        "sampler": recorded,
    }


def sampler_comparison(study, quality_of: Callable[[Path], dict]) -> dict | None:
    """The scale's sampler settings (None without any): per setting the synthesis step and its outputs' network calls
    per slice, Tab. 1–3 quality (``quality_of(datalist)``, the study's own metrics) and the step's wall time as a
    ratio of the reference's (the first setting)."""
    if not study.samplers:
        return None
    timings = study.step_timings()
    reference = timings.get(study.sampler_step(study.samplers[0]))
    settings = []
    for setting in study.samplers:
        datalist = study.sampler_dir(setting) / "datalist.json"
        step = study.sampler_step(setting)
        seconds = timings.get(step)
        settings.append(
            {
                "name": setting.name,
                "overrides": dict(setting.overrides),
                "step": step,
                **network_calls(datalist),
                "step_seconds": seconds,
                "time_ratio": seconds / reference if seconds is not None and reference else None,
                "quality": quality_of(datalist),
            }
        )
    return {"reference": study.samplers[0].name, "settings": settings}


def write_fqcdm_report(study, report_dir: str | Path | None = None) -> Path:
    """``fqcdm_study.json`` (every number of the report) and ``fqcdm_study.md`` rendered from it alone
    (:func:`render_fqcdm_report`), + ``downstream.png``, ``examples.png`` in ``report_dir`` (default ``OUT/report``)."""
    out = Path(report_dir or study.out / "report")
    synthesis = _recorded_synthesis(study)
    fov_size = synthesis["fov_size"]
    labels = {name: synthesis["labels"][name] for name in ACDC_CLASSES if name in synthesis["labels"]}
    quality = synthesis_quality_report(
        {m: study.synthetic_dir("test", m) / "datalist.json" for m in study.methods},
        out,
        fov_size,
        title="Tab. 1–3 analogue: synthetic vs real test images of the same label maps",
        labels=labels,
    )
    scored = {str(study.synthetic_dir("test", m) / "datalist.json"): quality[m] for m in study.methods}

    def quality_of(datalist: Path) -> dict:  # Tab. 1–3's metrics; a set they already scored is not scored again
        if str(datalist) not in scored:
            scored[str(datalist)] = synthesis_quality(datalist, fov_size, labels=labels)
        return scored[str(datalist)]

    summaries = {
        run.name: run_summary(
            [f for s in study.seeds if (f := study.segmentation_dir(run, s) / "scores.json").exists()]
        )
        for run in study.unique_runs()
    }
    _curves(out / "downstream.png", study, summaries)
    trained = next(
        (
            json.loads(f.read_text())
            for run in study.unique_runs()
            for seed in study.seeds
            if (f := study.segmentation_dir(run, seed) / "scores.json").exists()
        ),
        {},
    )
    results = as_results(
        {
            "study": "fqcdm_study",
            "scale_name": study.scale.get("name", study.scale_path.stem),
            "provenance": study.provenance("fqcdm_study"),
            "scale": study.scale,
            "split": json.loads((study.out / "split" / "split.json").read_text()),
            "n_quality_cases": len(json.loads(Path(study.split_path("quality_test")).read_text())["training"]),
            "synthesis": {"fov_size": fov_size, "image_size": synthesis["image_size"]},
            "quality_classes": list(labels),
            "quality": quality,
            "samplers": sampler_comparison(study, quality_of),
            "segmenter": {k: trained.get(k) for k in ("network", "max_steps", "batch_size", "in_plane_size")},
            "runs": {run.name: asdict(run) for run in study.unique_runs()},
            "panels": {key: [run.name for run in members] for key, members in study.runs().items()},
            "downstream": summaries,
            "seeds": list(study.seeds),
            "example": _example_panel(out / "examples.png", study, list(study.methods), fov_size),
            "timings_s": study.step_timings(),
            "wall_time": study.wall_time(
                (
                    ("training", "train_"),
                    ("synthesis", "synth_"),
                    ("pretraining", "pretrain_"),
                    ("segmentation", "segment_"),
                ),
                "fqcdm_study.json",
            ),
        }
    )
    write_results(out / "fqcdm_study.json", results)
    with atomic_path(out / "fqcdm_study.md") as tmp:
        tmp.write_text(render_fqcdm_report(results))
    return out / "fqcdm_study.md"


def _reverse_steps(sampler: Mapping) -> str:
    kind = "DDPM" if sampler["step"] == "ddpm" else f"DDIM η = {number(sampler['eta']):g}"
    return f"{kind}, {sampler['num_inference_steps']} of {sampler['num_train_timesteps']} timesteps"


def sampler_markdown(samplers: Mapping | None) -> str:
    """The section "Sampler: quality against network calls" of the results' ``samplers`` (empty without any)."""
    if not samplers:
        return ""
    table = markdown_table(
        (
            "sampler",
            "reverse steps",
            "network calls per slice",
            "PSNR ↑",
            "MS-SSIM ×100 ↑",
            "FID ↓",
            "slices",
            "synthesis step (s)",
            "step time ratio",
        ),
        (
            (
                f"**{s['name']}**" if s["name"] == samplers["reference"] else s["name"],
                _reverse_steps(s["sampler"]),
                f"{number(s['network_calls_per_slice']):g}",
                spread_cell(s["quality"]["psnr"]),
                spread_cell(s["quality"]["ms_ssim"], scale=100),
                fixed(s["quality"]["fid"]["fid"]),
                s["quality"]["psnr"]["n"],
                fixed(s["step_seconds"], 1),
                fixed(s["time_ratio"]),
            )
            for s in samplers["settings"]
        ),
    )
    return f"""## Sampler: quality against network calls

The trained FQCDM model synthesises the same {len(samplers["settings"][0]["cases"])} test label maps (from
`split/quality_test.json`, same seed) once per sampler setting (`num_inference_steps`, `ddim_eta`); the reference
is **{samplers["reference"]}**. PSNR, MS-SSIM and FID as in Tab. 1–3 (mean ± std over slices). Network calls per
slice as the cases' provenance records them. Step time ratio: the wall time of the setting's synthesis step divided
by the reference's, on the same machine (whole bundle runs: process start and model loading included).

{chr(10).join(table)}

"""


def render_fqcdm_report(results: Mapping) -> str:
    """The generated Markdown of the FQCDM study from its results JSON alone (no discussion)."""
    quality, split, summaries, runs = results["quality"], results["split"], results["downstream"], results["runs"]
    fov_size, image_size = results["synthesis"]["fov_size"], results["synthesis"]["image_size"]
    quality_text = synthesis_quality_markdown(quality, fov_size, results["quality_classes"]).strip()
    ablation = markdown_table(
        ("FDGB", "FQB", "DBD", "method", "PSNR", "MS-SSIM ×100"),
        (
            (
                *("✓" if flag else "" for flag in flags),
                method,
                fixed(quality[method]["psnr"]["mean"]),
                fixed(quality[method]["ms_ssim"]["mean"], scale=100),
            )
            for method, flags in ABLATION.items()
            if method in quality
        ),
    )
    tab4 = markdown_table(
        HEADER, (_row(_tab4_label(runs[name]), summaries[name]) for name in results["panels"]["tab4"])
    )
    fig_rows = {
        key: markdown_table(HEADER, (_row(name, summaries[name]) for name in results["panels"][key]))
        for key in ("fig4", "fig5", "fig6")
    }
    trained, example, scale = results["segmenter"], results["example"], results["scale"]
    network, n_quality = trained.get("network") or "MONAI UNet", results["n_quality_cases"]
    return f"""# FQCDM study at {results["scale_name"]} scale

{provenance_markdown(results["provenance"])}

Split by patient, stratified by ACDC group (seed {split["seed"]}, test fraction {split["test_fraction"]}):
{len(split["train"])} training cases (ED and ES frames), {len(split["test"])} test cases. All generative models are
trained on all training cases; images are synthesised at {image_size[0]}×{image_size[1]} px from a
centred {fov_size[0]}×{fov_size[1]} px field of view.

## Tab. 1–3 analogue: image quality

Every method synthesises the label maps of {n_quality} test cases (`split/quality_test.json`, seeded), one sample each.

{quality_text}

Tab. 5 subset (ablation; the rows that need no extra training). "VQ reconstruction" is not a generative
model: it encodes and decodes the real test image itself, so it bounds what the autoencoder can reproduce
and is not comparable with the rows that generate from the label map alone:

{chr(10).join(ablation)}

{sampler_markdown(results.get("samplers"))}## Downstream segmentation (Sec. 5)

{network}, {trained.get("max_steps")} training steps of {trained.get("batch_size")} slices
({trained.get("in_plane_size")} px) for every run, scored on the
{len(split["test"])} real test cases; "real n" = the first n training cases of the seeded order, "syn k" = FQCDM
images synthesised from the first k label maps of that order. Mean ± std over seeds {results["seeds"]}.

### Tab. 4 analogue: synthetic data and classic augmentation

{chr(10).join(tab4)}

### Fig. 4 analogue: mixed real + synthetic at several ratios

{chr(10).join(fig_rows["fig4"])}

### Fig. 5 analogue: synthetic only

{chr(10).join(fig_rows["fig5"])}

### Fig. 6 analogue: context-encoder pretraining on {scale.get("pretraining_cases")} synthetic cases, then fine-tuning

{chr(10).join(fig_rows["fig6"])}

![downstream](downstream.png)

## Example

{example_markdown(example, "real image, label map and every method")}

{wall_time_markdown(results["wall_time"])}
"""
