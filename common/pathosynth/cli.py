"""Command line (Fire): project utilities that are not bundle workflows.

    python -m pathosynth.cli phantom OUT_DIR [--n_normal 4 --n_pathological 8 --seed 0]
    python -m pathosynth.cli phantom_acdc OUT_DIR [--n_patients 4 --seed 0 --in_plane 96 --n_slices 6]
    python -m pathosynth.cli phantom_ct OUT_DIR [--n_cases 6 --seed 0 --in_plane 64 --num_slices 16]
    python -m pathosynth.cli validate --dataset_dir DIR   (or --datalist FILE)
    python -m pathosynth.cli network_evaluations --num_steps 300 --jump_length 5 --jump_n_sample 5
    python -m pathosynth.cli pseudo3d_benchmark [--rounds 15]
    python -m pathosynth.cli export OUT --format nnunet --sources '[{"name": "P", "dataset_dir": DIR,
                                                                     "select": "with_lesion"}, ...]'
    python -m pathosynth.cli mask_report OUT --sources '[{"name": "real", "dataset_dir": DIR, "select": "with_lesion"},
                                                        {"name": "DiffMask", "datalist": "masks/datalist.json"}]'
    python -m pathosynth.cli similarity_report OUT --sources '[{"name": "LeFusion-J",
                                                               "datalist": "syn_j/datalist.json"}, ...]'
    python -m pathosynth.cli split DATASET_DIR OUT_DIR [--test_fraction 0.25 --seed 0]
    python -m pathosynth.cli lefusion_study OUT_DIR --dataset_dir DIR [--scale cpu|ci|paper|FILE.json]
    python -m pathosynth.cli fqcdm_study OUT_DIR --dataset_dir DIR [--scale cpu|ci|paper|FILE.json]
    python -m pathosynth.cli emit_diff_study OUT_DIR --dataset_dir DIR [--scale cpu|ci|paper|FILE.json]
    python -m pathosynth.cli reference_guided_study OUT_DIR --dataset_dir DIR [--scale cpu|ci|paper|FILE.json]
    python -m pathosynth.cli class_conditional_study OUT_DIR --dataset_dir DIR [--scale cpu|ci|paper|FILE.json]
    python -m pathosynth.cli report RESULTS.json [--out FILE.md]
    python -m pathosynth.cli sampler_benchmark OUT --dataset_dir DIR --ckpt_dir CKPT [--overlays A.json B.json]
                                               [--settings FILE.json] [--seeds 0 1] [--max_cases N]
    python -m pathosynth.cli sampler_benchmark_study OUT_DIR --dataset_dir DIR [--scale sampler_cpu|sampler_ci|F.json]
    python -m pathosynth.cli texture_control_study OUT_DIR --dataset_dir DIR [--scale texture_cpu|texture_ci|F.json]
    python -m pathosynth.cli reference_guidance_grid OUT.png DATASET_DIR CKPT_DIR [--factors ... --stop_steps ...]

Training and synthesis run through ``python -m monai.bundle run`` with a bundle's configs.
"""

from __future__ import annotations

from pathlib import Path

import fire

from .data.cases import load_cases
from .data.labels import EMIDEC_LABELS
from .diffusion.inpainting import network_evaluations as _network_evaluations


def phantom(out_dir: str, n_normal: int = 4, n_pathological: int = 8, seed: int = 0, in_plane: int = 128) -> str:
    """Write EMIDEC-like synthetic cases (the embedded demo data) in the EMIDEC layout."""
    from .data.phantom import generate_emidec_like_dataset

    ids = generate_emidec_like_dataset(
        out_dir, n_normal=n_normal, n_pathological=n_pathological, seed=seed, in_plane=in_plane
    )
    return f"{len(ids)} cases in {out_dir}"


def phantom_acdc(out_dir: str, n_patients: int = 4, seed: int = 0, in_plane: int = 96, n_slices: int = 6) -> str:
    """Write ACDC-like synthetic cine patients (ED + ES frames, RV / myocardium / LV labels) in the ACDC layout."""
    from .data.phantom import generate_acdc_like_dataset

    ids = generate_acdc_like_dataset(out_dir, n_patients=n_patients, seed=seed, in_plane=in_plane, n_slices=n_slices)
    return f"{len(ids)} patients ({2 * len(ids)} labelled frames) in {out_dir}"


def phantom_ct(out_dir: str, n_cases: int = 6, seed: int = 0, in_plane: int = 64, num_slices: int = 16) -> str:
    """Write chest-CT phantoms with lung nodules (HU; label 1 = nodule) and their ``dataset.json`` datalist."""
    from .data.phantom_ct import generate_ct_nodule_dataset

    ids = generate_ct_nodule_dataset(out_dir, n_cases=n_cases, seed=seed, in_plane=in_plane, num_slices=num_slices)
    return f"{len(ids)} CT cases in {out_dir}; pass --datalist {Path(out_dir) / 'dataset.json'}"


def validate(dataset_dir: str | None = None, datalist: str | None = None, lesion_classes=None, labels=None) -> str:
    """Check every case of a dataset the way the bundles do before training; print a summary or the problems.

    Each layout is checked against its own label semantics: EMIDEC's, ACDC's, a datalist's ``labels`` (EMIDEC's when it
    declares none), a MedMNIST npz's splits and classes. ``--labels`` (checked against the data's own) and
    ``--lesion_classes`` (default: the MI / PMO classes among the labels) check the data as a bundle configured so
    would.
    """
    from .data.labels import lesion_classes_of
    from .data.layouts import dataset_labels
    from .data.medmnist import find_npz
    from .io.datalists import parse_option

    if dataset_dir and not datalist and _is_npz(dataset_dir):
        return _validate_npz(find_npz(dataset_dir))
    declared = dataset_labels(None if datalist else dataset_dir, datalist)
    name, own = declared if declared else ("EMIDEC (the default: the data declares no labels)", EMIDEC_LABELS)
    labels = dict(parse_option(labels) or own)
    lesions = _as_list(lesion_classes) if lesion_classes is not None else lesion_classes_of(labels)
    cases = load_cases(dataset_dir, datalist, labels=labels, lesion_classes=lesions)
    return f"{len(cases)} cases passed validation against the labels {labels} of {name}"


def _is_npz(dataset_dir: str) -> bool:
    """A MedMNIST file, or a folder holding one and no EMIDEC / ACDC layout."""
    from .data.layouts import detect_layout

    path = Path(dataset_dir)
    return path.suffix == ".npz" or (path.is_dir() and not detect_layout(path) and any(path.glob("*.npz")))


def _validate_npz(path: Path) -> str:
    """Every split of a MedMNIST npz read and checked (keys, shapes, classes); one line per split."""
    import numpy as np

    from .data.medmnist import dataset_class_names, medmnist_splits, read_medmnist_split

    names, lines = dataset_class_names(path), []
    for split in medmnist_splits(path):
        _, classes = read_medmnist_split(path, split)
        values, numbers = np.unique(classes, return_counts=True)
        counts = {(names[v] if names and v < len(names) else int(v)): int(n) for v, n in zip(values, numbers)}
        lines.append(f"{path} {split}: {len(classes)} images passed validation, per class {counts}")
    return "\n".join(lines)


def network_evaluations(num_steps: int = 300, jump_length: int = 5, jump_n_sample: int = 5) -> int:
    """Network calls per synthesised crop for a resampling schedule (official EMIDEC setting: 1480)."""
    return _network_evaluations(num_steps, jump_length, jump_n_sample)


def pseudo3d_benchmark(rounds: int = 15) -> str:
    """Time of the pseudo-3D in-plane / through-plane convolutions against torch's Conv3d on the same weights, as ratios
    measured in this process on one thread (a benchmark, not a test: ratios move with the machine and its load)."""
    import json

    from .networks.pseudo3d_speed import conv_speed_ratios

    return json.dumps(conv_speed_ratios(rounds=int(rounds)), indent=2)


def mask_report(out_dir: str, sources=(), labels=None, title: str = "Lesion mask realism") -> str:
    """Compare lesion-mask statistics of several sets (real dataset folders, synthetic datalists) side by side:
    writes mask_realism.md / .json / .png into OUT_DIR. ``sources`` as for ``export``."""
    from .data.exports import sets_from_sources
    from .io.datalists import parse_option
    from .masks.realism import realism_report

    labels = dict(parse_option(labels) or EMIDEC_LABELS)
    sets = sets_from_sources(parse_option(sources), labels)
    realism_report({name: [r["label"] for r in records] for name, records in sets}, labels, out_dir, title=title)
    return f"report in {out_dir}/mask_realism.md"


def similarity_report(
    out_dir: str,
    sources=(),
    labels=None,
    classes=("MI", "PMO"),
    title: str = "Synthetic vs real: lesion-region similarity",
) -> str:
    """LeFusion Tab. 2: lesion-region PSNR/SSIM of each method's synthetic cases against their real sources.
    ``sources``: a list of {"name": METHOD, "datalist": SYNTHETIC_DATALIST}; writes similarity.md/.json/.png."""
    from .evaluation.similarity import similarity_report as report
    from .io.datalists import parse_option

    methods = {source["name"]: source["datalist"] for source in parse_option(sources)}
    report(methods, out_dir, dict(parse_option(labels) or EMIDEC_LABELS), list(classes), title)
    return f"report in {out_dir}/similarity.md"


def split(dataset_dir: str, out_dir: str, test_fraction: float = 0.25, seed: int = 0, labels=None) -> str:
    """Split a dataset by case into train/test datalists in OUT_DIR: EMIDEC stratified normal / pathological,
    ACDC stratified by group with both frames of a patient on one side; ``labels`` default to the layout's."""
    from .data.splits import write_split
    from .io.datalists import parse_option

    paths = write_split(dataset_dir, out_dir, test_fraction, seed, dict(parse_option(labels) or {}) or None)
    return "\n".join(f"{name}: {path}" for name, path in paths.items())


def lefusion_study(out_dir: str, dataset_dir: str, scale: str = "cpu", jobs: int | None = None) -> str:
    """Re-run LeFusion's Tab. 2 and Tab. 1 on DATASET_DIR (EMIDEC layout) into OUT_DIR; resumable (rerun the same
    command). ``scale``: cpu (74-82 min measured on 2 cores), ci, paper, or a scale JSON file."""
    import logging

    from .studies.lefusion_study import LeFusionStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {LeFusionStudy(dataset_dir, out_dir, scale, jobs).run()}"


def fqcdm_study(out_dir: str, dataset_dir: str, scale: str = "cpu", jobs: int | None = None) -> str:
    """Re-run FQCDM's Tab. 1–3 (image quality) and Sec. 5 (Tab. 4, Fig. 4–6: downstream segmentation) on DATASET_DIR
    (ACDC layout) into OUT_DIR; resumable (rerun the same command). ``scale``: cpu, ci, paper, or a scale JSON file."""
    import logging

    from .studies.fqcdm_study import FqcdmStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {FqcdmStudy(dataset_dir, out_dir, scale, jobs).run()}"


def emit_diff_study(out_dir: str, dataset_dir: str, scale: str = "cpu", jobs: int | None = None) -> str:
    """Re-run EMIT-Diff's Tab. 2 (no augmentation, each classic augmentation, EMIT-Diff; k-fold by case) and the Fig. 5
    ablations (ratio n, alpha, patch size) on DATASET_DIR (ACDC or EMIDEC layout) into OUT_DIR; resumable (rerun the
    same command). ``scale``: cpu, ci, paper, or a scale JSON file."""
    import logging

    from .studies.emit_diff_study import EmitDiffStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {EmitDiffStudy(dataset_dir, out_dir, scale, jobs).run()}"


def reference_guided_study(out_dir: str, dataset_dir: str, scale: str = "cpu", jobs: int | None = None) -> str:
    """Re-run the reference-guided DDPM's Tab. 1 on DATASET_DIR (EMIDEC layout) into OUT_DIR: a lesion / no-lesion slice
    classifier trained on real slices vs real + increasing amounts of synthetic ones, AUC/F1 on real held-out cases;
    resumable (rerun the same command). ``scale``: cpu, ci, paper, or a scale JSON file."""
    import logging

    from .studies.reference_guided_study import ReferenceGuidedStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {ReferenceGuidedStudy(dataset_dir, out_dir, scale, jobs).run()}"


def class_conditional_study(out_dir: str, dataset_dir: str, scale: str = "cpu", jobs: int | None = None) -> str:
    """Re-run the class-conditional DDPM's Tab. 2 on DATASET_DIR (a MedMNIST npz folder) into OUT_DIR: ResNet/DenseNet
    classifiers trained on synthetic, real and real + synthetic images, scored on the real held-out split; resumable
    (rerun the same command). ``scale``: cpu, ci, paper, or a scale JSON file."""
    import logging

    from .studies.class_conditional_study import ClassConditionalStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {ClassConditionalStudy(dataset_dir, out_dir, scale, jobs).run()}"


def report(results_json: str, out: str | None = None) -> str:
    """Render a study's generated report (Markdown) from its results JSON alone (lefusion_study.json, fqcdm_study.json,
    emit_diff_study.json, reference_guided_study.json, class_conditional_study.json, mask_realism.json,
    sampler_benchmark.json, texture_control.json, a classification evaluation's results.json): printed, or written to
    --out FILE.md."""
    from .studies.reports import write_report

    return write_report(results_json, out)


def sampler_benchmark(
    out_dir: str,
    dataset_dir: str | None = None,
    ckpt_dir: str | None = None,
    overlays=(),
    settings: str | None = None,
    seeds=(0, 1),
    max_cases: int | None = None,
    patch_size: int = 32,
    datalist: str | None = None,
) -> str:
    """lesion_inpainting: re-synthesise the pathological cases of DATASET_DIR with each sampler setting (default grid:
    the paper's 300/(5,5) = 1,480 calls per crop as the reference, 300/(2,2) = 598, and few-step candidates; or
    --settings FILE.json) and write OUT/sampler_benchmark.json, .md and .png: lesion PSNR/SSIM per class, KID of lesion
    patches, background exactness, wall time and paired differences against the reference. Resumable (rerun it).
    ``--datalist FILE`` instead of ``--dataset_dir`` takes the cases of a datalist (e.g. a split's test set)."""
    import logging

    from .studies.sampler_benchmark import sampler_benchmark as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if ckpt_dir is None:
        raise SystemExit("sampler_benchmark needs --ckpt_dir (the folder of the trained lesion_inpainting model)")
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    path = run(
        out_dir, dataset_dir, ckpt_dir, _as_list(overlays), settings, seeds, max_cases, patch_size, datalist=datalist
    )
    return f"report: {path.with_suffix('.md')}"


def sampler_benchmark_study(out_dir: str, dataset_dir: str, scale: str = "sampler_cpu", jobs: int | None = None) -> str:
    """Issue 18's measurement in one command: split DATASET_DIR by case, train LeFusion-J and the clean-context variant
    on the training cases, benchmark the samplers on the held-out pathological cases into OUT_DIR/benchmark/;
    resumable (rerun the same command). ``scale``: sampler_cpu, sampler_ci, or a scale JSON file."""
    import logging

    from .studies.sampler_benchmark_study import SamplerBenchmarkStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = SamplerBenchmarkStudy(dataset_dir, out_dir, scale, jobs).run()
    return f"report: {path.with_suffix('.md')}"


def texture_control_study(out_dir: str, dataset_dir: str, scale: str = "texture_cpu", jobs: int | None = None) -> str:
    """Issue 22's measurement in one command: split DATASET_DIR by case, train a histogram-conditioned LeFusion-J on
    the training cases, synthesise each held-out pathological case once per texture centre and compare the mean
    lesion intensities (OUT_DIR/texture_control.{json,md}, texture_preview.png); resumable. ``scale``: texture_cpu,
    texture_ci, or a scale JSON file."""
    import logging

    from .studies.texture_control_study import TextureControlStudy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return f"report: {TextureControlStudy(dataset_dir, out_dir, scale, jobs).run()}"


def gather_list_flags(argv: list[str], names=("seeds", "overlays")) -> list[str]:
    """``--seeds 0 1`` / ``--overlays a.json b.json`` as one list flag (``--seeds=[0, 1]``) for ``sampler_benchmark``:
    fire would read the second value as a positional argument. Values are the tokens up to the next ``--`` flag."""
    rest, i = [], 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].replace("-", "_") if token.startswith("--") and "=" not in token else None
        if name in names:
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(argv[i + 1])
                i += 1
            rest.append(f"--{name}={values!r}" if len(values) != 1 else f"--{name}={values[0]}")
        else:
            rest.append(token)
        i += 1
    return rest


def reference_guidance_grid(
    out_png: str,
    dataset_dir: str,
    ckpt_dir: str,
    factors=(2, 4, 8, 16),
    stop_steps=None,
    seeds=(0, 1, 2),
    configs=("inference.json",),
    overrides=None,
) -> str:
    """reference_guided_ddpm: samples for anatomy low-pass factors N_s (rows) x stop steps a_s (columns), with the
    distance-to-reference / diversity numbers beside the PNG (how N_s and a_s trade fidelity for diversity)."""
    from .studies.reference_guidance_grid import guidance_grid

    guidance_grid(out_png, dataset_dir, ckpt_dir, factors, stop_steps, seeds, configs, overrides)
    return out_png


def pack(bundle: str, out_dir: str = "dist", weights=(), overlays=()) -> str:
    """Pack BUNDLE (a bundles/<name> folder) into OUT_DIR/<name>_v<version>.zip: configs, docs, LICENSE, the
    pathosynth code it needs, requirements.txt pinned from metadata.json, and optional --weights (the first is
    stored as models/model.pt, the MONAI bundle convention MONAI Label loads); --overlays (e.g. the overlay the
    weights were trained with) are merged into the archive's inference.json, the one file MONAI Label reads.
    Runs without this repository: unzip, pip install -r <name>/requirements.txt, cd <name>,
    python -m monai.bundle run inference ..."""
    from .deploy.archive import pack_bundle

    return str(pack_bundle(bundle, out_dir, _as_list(weights), _as_list(overlays)))


def _as_list(value) -> list:
    """fire passes a single --flag value as a string and several as a tuple."""
    return [value] if isinstance(value, str) else list(value)


REPEATABLE_FLAGS = ("weights", "overlays")  # pack options a user naturally repeats, one file each


def merge_repeated_flags(argv: list[str], names=REPEATABLE_FLAGS) -> list[str]:
    """``--weights a.pt --weights b.pt`` as one list flag (``--weights=['a.pt', 'b.pt']``).

    Why: fire keeps only the last value of a repeated flag, silently, so ``pack`` used to drop every weights file
    but the last. A flag given once is left as it is (fire then reads a list literal or a single path).
    """
    values: dict[str, list[str]] = {}
    rest, i = [], 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else None
        if name in names:
            if "=" in token:
                values.setdefault(name, []).append(token.split("=", 1)[1])
            elif i + 1 < len(argv):
                values.setdefault(name, []).append(argv[i + 1])
                i += 1
            else:
                raise SystemExit(f"--{name} needs a value")
        else:
            rest.append(token)
        i += 1
    for name, given in values.items():
        rest.append(f"--{name}={given[0]}" if len(given) == 1 else f"--{name}={given!r}")
    return rest


def main() -> None:
    import sys

    from .data.exports import export

    if sys.argv[1:2] == ["sampler_benchmark"]:
        sys.argv[1:] = gather_list_flags(sys.argv[1:])
    sys.argv[1:] = merge_repeated_flags(sys.argv[1:])

    fire.Fire(
        {
            "phantom": phantom,
            "phantom_acdc": phantom_acdc,
            "phantom_ct": phantom_ct,
            "validate": validate,
            "network_evaluations": network_evaluations,
            "pseudo3d_benchmark": pseudo3d_benchmark,
            "pack": pack,
            "export": export,
            "mask_report": mask_report,
            "similarity_report": similarity_report,
            "split": split,
            "lefusion_study": lefusion_study,
            "fqcdm_study": fqcdm_study,
            "emit_diff_study": emit_diff_study,
            "reference_guided_study": reference_guided_study,
            "class_conditional_study": class_conditional_study,
            "reference_guidance_grid": reference_guidance_grid,
            "report": report,
            "sampler_benchmark": sampler_benchmark,
            "sampler_benchmark_study": sampler_benchmark_study,
            "texture_control_study": texture_control_study,
        }
    )


if __name__ == "__main__":
    main()
