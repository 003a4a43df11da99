"""Quality against network calls of lesion-inpainting samplers (issue 18): ``pathosynth.cli sampler_benchmark``.

The pathological cases of a dataset are re-synthesised by one trained lesion_inpainting model with each sampler
setting of a grid, over the same seeds, in one process. Per (setting, case, seed) the record holds lesion-region PSNR
and SSIM against the real image (per lesion class and over all lesions,
:func:`pathosynth.metrics.image.lesion_region_similarity` on the real volume's range), the fraction of background voxels
left bit-identical, the wall time of the synthesis and the features of the lesion patches for KID. Settings are
compared with the *reference* (the paper's 300 steps with (5, 5) jumps = 1,480 network calls per crop) pair by pair --
the same case and seed -- so case difficulty cancels; the reference's own seed-to-seed spread is the noise floor a
difference must exceed to mean anything.

- **Setting.** ``{"name", "overlays"?, <config key>: value, ...}``: the bundle's ``inference.json`` plus the
  command's ``--overlays``, the setting's ``overlays``, then its keys as overrides. Chain keys that neither it nor
  its own overlays set take the plain chain's values (:data:`PLAIN_CHAIN`: all T steps, no jumps, DDPM steps), so a
  setting says everything that defines it whatever the scale overlays (e.g. smoke.json's 8 steps) hold;
  ``known_region`` belongs to the model and defaults to the config's (Eq. 1's ``"noised"``, or ``"clean"`` after
  ``inference_clean_context.json``). Any other key must exist in the config.
- **KID.** Lesion patches: per slice holding lesion, a ``patch_size`` square centred on the lesion, mapped to [0, 1]
  by the real volume's range, everything outside the lesion set to 0 (so only lesion texture differs between the
  sets); synthetic patches of all seeds against the same cases' real patches, embedded by the weight-free
  ``random-conv`` extractor (:class:`pathosynth.metrics.features.RandomConvFeatures`). The reference's KID spread
  over seeds (max - min of the per-seed KIDs) is its noise floor.
- **Resumable.** Each record is a JSON file under ``OUT/records/<setting>/``; a rerun skips finished records and
  refuses (naming the file) a record made with another checkpoint, sampler, case file or KID extractor.
  ``time_ratio`` compares summed wall times; the JSON says whether all records were timed in one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from ..bundle_configs import config_files
from ..data.labels import class_values
from ..errors import MissingInputError, UserInputError
from ..io.atomic import sha256_file, write_json
from ..io.results import as_results, write_results
from ..metrics.distribution import extract_features, kernel_inception_distance
from ..metrics.features import RandomConvFeatures
from ..metrics.image import lesion_region_similarity
from ..synthesis.results import read_case
from .bundle_study import default_bundles_dir, slug
from .results_markdown import code_commit

__all__ = ["DEFAULT_GRID", "GOAL", "PLAIN_CHAIN", "load_settings", "sampler_benchmark"]

STUDY = "sampler_benchmark"
BUNDLE = "lesion_inpainting"
PLAIN_CHAIN = {"num_inference_steps": None, "jump_length": 1, "jump_n_sample": 1, "eta": None}
GOAL = {
    "max_network_evaluations": 25,
    "psnr_tolerance_db": 0.5,
    "ssim_tolerance": 0.01,
    "kid": "no worse than the reference's by more than the reference's seed-to-seed KID spread",
}
REGIONS = ("all lesions",)  # the overall region; the lesion classes are added from the config


def _setting(name: str, steps=None, jumps=(1, 1), eta=None, known_region="noised") -> dict:
    return {
        "name": name,
        "num_inference_steps": steps,
        "jump_length": jumps[0],
        "jump_n_sample": jumps[1],
        "eta": eta,
        "known_region": known_region,
    }


DEFAULT_GRID = {
    "reference": "paper 300/(5,5)",
    "settings": [
        _setting("paper 300/(5,5)", None, (5, 5)),
        _setting("300/(2,2)", None, (2, 2)),
        _setting("DDPM 100", 100),
        _setting("DDPM 50", 50),
        _setting("DDPM 25", 25),
        _setting("DDPM 25, known x0", 25, known_region="x0"),
        _setting("DDIM eta=0 25", 25, eta=0.0),
        _setting("DDIM eta=0 25, known x0", 25, eta=0.0, known_region="x0"),
        _setting("DDIM eta=0.5 25", 25, eta=0.5),
        _setting("DDIM eta=1 25", 25, eta=1.0),
        _setting("20/(2,2)", 20, (2, 2)),
    ],
}


# ----------------------------------------------------------------------------------------------- settings and config
def load_settings(path: str | os.PathLike | None) -> dict:
    """The grid: :data:`DEFAULT_GRID`, or a JSON file holding ``{"reference": NAME, "settings": [...]}`` (or just the
    list; the first is then the reference). Names must be unique and the reference one of them."""
    if path is None:
        grid, source = json.loads(json.dumps(DEFAULT_GRID)), "the default grid"
    else:
        source = str(path)
        if not Path(path).is_file():
            raise MissingInputError(f"--settings {path}: no such file")
        try:
            grid = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise UserInputError(f"--settings {path}: not valid JSON ({error})") from None
        if isinstance(grid, list):
            grid = {"reference": grid[0].get("name") if grid and isinstance(grid[0], dict) else None, "settings": grid}
    settings = grid.get("settings") if isinstance(grid, dict) else None
    if (
        not isinstance(settings, list)
        or not settings
        or not all(isinstance(s, dict) and s.get("name") for s in settings)
    ):
        raise UserInputError(f"{source}: 'settings' must be a non-empty list of objects, each with a 'name'")
    names = [str(s["name"]) for s in settings]
    if len(set(names)) != len(names) or len({slug(n) for n in names}) != len(names):
        raise UserInputError(f"{source}: setting names must be unique (also as folder names): {names}")
    if grid.get("reference") not in names:
        raise UserInputError(f"{source}: 'reference' is {grid.get('reference')!r}; it must name one of {names}")
    for s in settings:
        if not isinstance(s.get("overlays", []), list):
            raise UserInputError(f"{source}: setting {s['name']!r}: 'overlays' must be a list of config files")
    return {"reference": grid["reference"], "settings": settings, "source": source}


def _configs_dir(bundle_dir: str | os.PathLike | None) -> Path:
    return Path(bundle_dir or default_bundles_dir() / BUNDLE) / "configs"


def _overlay_path(name: str, folder: Path, what: str) -> str:
    """A config overlay as given, or by name in the bundle's configs folder."""
    for candidate in (Path(name), folder / name):
        if candidate.is_file():
            return str(candidate)
    raise MissingInputError(f"{what} {name}: no such config file (looked at {Path(name)} and {folder / name})")


def _parser(folder: Path, overlays: Sequence[str], overrides: Mapping) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(str(folder / "metadata.json"))
    parser.read_config([str(f) for f in config_files(folder, ["inference.json", *overlays])])
    parser.update(dict(overrides))
    return parser


def _setting_parsers(grid: Mapping, folder: Path, overlays: Sequence[str], base: Mapping) -> dict[str, ConfigParser]:
    """One parsed config per setting; every overlay and key checked before anything runs."""
    common = [_overlay_path(o, folder, "--overlays") for o in overlays]
    parsers = {}
    for setting in grid["settings"]:
        name = str(setting["name"])
        what = f"{grid['source']}: setting {name!r}: overlay"
        own = [_overlay_path(o, folder, what) for o in setting.get("overlays", [])]
        own_keys = {k for path in own for k in json.loads(Path(path).read_text())}
        chain = {k: v for k, v in PLAIN_CHAIN.items() if k not in own_keys}
        overrides = {**chain, **{k: v for k, v in setting.items() if k not in ("name", "overlays")}}
        probe = _parser(folder, [*common, *own], {})
        unknown = [k for k in overrides if k not in probe]
        if unknown:
            raise UserInputError(
                f"{grid['source']}: setting {name!r}: {unknown} are not keys of the {BUNDLE} inference config"
            )
        parsers[name] = _parser(folder, [*common, *own], {**overrides, **base})
    return parsers


# --------------------------------------------------------------------------------------------------------- measures
def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def background_exact(synthetic: np.ndarray, real: np.ndarray, lesion: np.ndarray) -> tuple[int, int]:
    """(bit-identical voxels, voxels) outside the lesion: a background voxel counts only if every bit is the input's."""
    if synthetic.dtype != real.dtype or synthetic.shape != real.shape:
        return 0, int((~lesion).sum())
    same = _bits(synthetic)[~lesion] == _bits(real)[~lesion]
    return int(same.sum()), int(same.size)


def lesion_patches(volume: np.ndarray, lesion: np.ndarray, data_range: tuple[float, float], size: int) -> np.ndarray:
    """(N, size, size) float32: per slice (last axis) holding lesion, the square centred on the lesion's centroid,
    mapped to [0, 1] by ``data_range`` and zero outside the lesion (zero padding at the image border)."""
    low, high = data_range
    unit = np.clip((volume.astype(np.float64) - low) / max(high - low, 1e-12), 0, 1) * lesion
    patches = []
    for k in range(volume.shape[-1]):
        rows, cols = np.nonzero(lesion[..., k])
        if rows.size == 0:
            continue
        r0, c0 = int(round(rows.mean())) - size // 2, int(round(cols.mean())) - size // 2
        patch = np.zeros((size, size), dtype=np.float32)
        src = unit[max(r0, 0) : r0 + size, max(c0, 0) : c0 + size, k]
        patch[max(-r0, 0) : max(-r0, 0) + src.shape[0], max(-c0, 0) : max(-c0, 0) + src.shape[1]] = src
        patches.append(patch)
    return np.stack(patches) if patches else np.zeros((0, size, size), dtype=np.float32)


def mean_ci(values: Sequence[float]) -> dict:
    """Mean, sample std and the t-distribution 95 % confidence interval of the mean of finite ``values``."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    half = float(t.ppf(0.975, x.size - 1) * std / math.sqrt(x.size)) if x.size > 1 else math.nan
    mean = float(x.mean())
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(x.size)}


def _kid(synthetic: np.ndarray, real: np.ndarray) -> float:
    if len(synthetic) < 2 or len(real) < 2:
        return math.nan
    return float(kernel_inception_distance(synthetic, real, subsets=100, subset_size=1000)[0])


# ------------------------------------------------------------------------------------------------------------ runner
class SamplerBenchmark:
    """The grid over the cases and seeds; see the module docstring. ``run()`` returns the results JSON's path."""

    def __init__(
        self,
        out_dir,
        dataset_dir,
        ckpt_dir,
        overlays: Sequence[str] = (),
        settings=None,
        seeds: Sequence[int] = (0, 1),
        max_cases: int | None = None,
        patch_size: int = 32,
        bundle_dir=None,
        datalist=None,
    ) -> None:
        self.out = Path(out_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.dataset_dir = None if dataset_dir is None else Path(dataset_dir)
        self.datalist = None if datalist is None else Path(datalist)
        if (self.dataset_dir is None) == (self.datalist is None):
            raise UserInputError("give the cases as --dataset_dir DIR (EMIDEC layout) or --datalist FILE, one of them")
        source = self.dataset_dir or self.datalist
        if not source.exists():
            raise MissingInputError(f"--{'dataset_dir' if self.dataset_dir else 'datalist'} {source}: does not exist")
        if not self.ckpt_dir.is_dir():
            raise MissingInputError(f"--ckpt_dir {ckpt_dir}: no such folder")
        self.seeds = [int(s) for s in seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserInputError(f"--seeds must be distinct integers, got {list(seeds)}")
        if max_cases is not None and int(max_cases) < 1:
            raise UserInputError(f"--max_cases must be >= 1, got {max_cases}")
        self.patch_size = int(patch_size)
        self.grid = load_settings(settings)
        self.overlays = list(overlays)
        self.folder = _configs_dir(bundle_dir)
        base = {
            "dataset_dir": None if self.dataset_dir is None else str(self.dataset_dir),
            "datalist": None if self.datalist is None else str(self.datalist),
            "ckpt_dir": str(self.ckpt_dir),
            "max_cases": max_cases,
            "progress": False,
        }
        self.parsers = _setting_parsers(self.grid, self.folder, self.overlays, base)
        reference = self.parsers[self.grid["reference"]]
        self.labels = dict(reference.get_parsed_content("labels"))
        self.classes = list(reference.get_parsed_content("lesion_classes"))
        self.cases = reference.get_parsed_content("cases")  # validated by load_cases before any sampling
        if not self.cases:
            raise UserInputError(f"{source}: no pathological case to re-synthesise")
        self.extractor = RandomConvFeatures(intensity_range=(0.0, 1.0))
        self.run_id = uuid.uuid4().hex
        self.command: str | None = None  # the command a study ran this from, for the report

    def setting_dir(self, name: str) -> Path:
        return self.out / "records" / slug(name)

    def identity(self, name: str, synthesizer) -> dict:
        """What a record of this setting depends on besides its case and seed."""
        checkpoints = {Path(p).name: sha256_file(p) for p in getattr(synthesizer, "checkpoints", [])}
        settings = synthesizer.settings() if hasattr(synthesizer, "settings") else {}
        definition = next(s for s in self.grid["settings"] if s["name"] == name)
        return as_results(
            {
                "setting": definition,
                "overlays": self.overlays,
                "synthesis": settings,
                "checkpoints": checkpoints,
                "extractor": self.extractor.name,
                "patch_size": self.patch_size,
            }
        )

    def run(self) -> Path:
        logging.info(
            "sampler benchmark: %d settings x %d cases x %d seeds into %s",
            len(self.parsers),
            len(self.cases),
            len(self.seeds),
            self.out,
        )
        real = {c["case_id"]: self._real_patches(c) for c in self.cases}
        records, calls, identities = {}, {}, {}
        ordered = sorted(self.parsers, key=lambda n: n != self.grid["reference"])  # the reference first
        for name in ordered:
            synthesizer = self.parsers[name].get_parsed_content("synthesizer")
            sampler = getattr(synthesizer, "sampler", None)
            calls[name] = int(sampler.network_evaluations_per_sample) if sampler is not None else 0
            identities[name] = self.identity(name, synthesizer)
            records[name] = [
                self._record(name, synthesizer, identities[name], case, seed)
                for case in self.cases
                for seed in self.seeds
            ]
        results = self.summarise(records, calls, identities, real)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{STUDY}.json"
        write_results(path, as_results(results))
        from .sampler_benchmark_report import write_outputs

        write_outputs(path)
        return path

    def _real_patches(self, case: Mapping) -> np.ndarray:
        image, label = read_case(case)
        lesion = np.isin(label, class_values(self.labels, self.classes))
        patches = lesion_patches(image, lesion, (float(image.min()), float(image.max())), self.patch_size)
        return extract_features(patches, self.extractor) if len(patches) else np.zeros((0, self.extractor.dim))

    def _record(self, name: str, synthesizer, identity: Mapping, case: Mapping, seed: int) -> dict:
        path = self.setting_dir(name) / f"{slug(case['case_id'])}_seed{seed}.json"
        expected = {**identity, "case_image": str(case["image"]), "case_label": str(case["label"])}
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("identity") != as_results(expected):
                raise UserInputError(
                    f"{path} was made with another checkpoint, sampler, case or KID extractor than "
                    "this run; benchmark into a new OUT folder (nothing in it is overwritten)"
                )
            return record
        image, label = read_case(case)
        start = time.perf_counter()
        result = synthesizer.synthesize(image, label, seed)
        wall = time.perf_counter() - start
        lesion = np.isin(label, class_values(self.labels, self.classes))
        data_range = (float(image.min()), float(image.max()))
        scores = lesion_region_similarity(
            result.image, image, label, self.labels, self.classes, data_range, metrics=("psnr", "ssim")
        )
        exact, background = background_exact(result.image, image, lesion)
        patches = lesion_patches(result.image, lesion, data_range, self.patch_size)
        features = extract_features(patches, self.extractor) if len(patches) else np.zeros((0, self.extractor.dim))
        record = as_results(
            {
                "setting": name,
                "case_id": case["case_id"],
                "seed": seed,
                "identity": expected,
                "scores": {region: {m: scores[region][m] for m in ("psnr", "ssim")} for region in scores},
                "background_exact_voxels": exact,
                "background_voxels": background,
                "network_evaluations": int(result.info.get("network_evaluations", 0)),
                "wall_s": wall,
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "features": features.astype(np.float32).tolist(),
            }
        )
        write_json(path, record)
        logging.info(
            "%s | %s seed %d: %.1f s, lesion PSNR %.2f dB",
            name,
            case["case_id"],
            seed,
            wall,
            scores["all lesions"]["psnr"],
        )
        return record

    # --------------------------------------------------------------------------------------------------- statistics
    def summarise(
        self, records: Mapping[str, list], calls: Mapping[str, int], identities: Mapping, real: Mapping[str, np.ndarray]
    ) -> dict:
        reference = self.grid["reference"]
        regions = [*REGIONS, *self.classes]
        real_features = np.concatenate([f for f in real.values() if len(f)]) if real else np.zeros((0, 1))
        ref_by_key = {(r["case_id"], r["seed"]): r for r in records[reference]}
        ref_wall = sum(r["wall_s"] for r in records[reference])
        settings = []
        for name, recs in records.items():
            paired = {
                m: {region: mean_ci(_paired(recs, ref_by_key, m, region)) for region in regions}
                for m in ("psnr", "ssim")
            }
            per_seed = {str(seed): _kid(_features(recs, seed), real_features) for seed in self.seeds}
            kid = {
                "value": _kid(_features(recs, None), real_features),
                "per_seed": per_seed,
                "seed_spread": _spread(per_seed.values()),
                "n_synthetic": len(_features(recs, None)),
                "n_real": int(len(real_features)),
                "extractor": self.extractor.name,
                "patch_size": self.patch_size,
            }
            exact = sum(r["background_exact_voxels"] for r in recs)
            total = sum(r["background_voxels"] for r in recs)
            wall = sum(r["wall_s"] for r in recs)
            settings.append(
                {
                    "name": name,
                    "definition": identities[name]["setting"],
                    "sampler": identities[name]["synthesis"],
                    "network_evaluations": calls[name],
                    "network_evaluations_per_case": float(np.mean([r["network_evaluations"] for r in recs])),
                    "wall_s_per_case": wall / len(recs),
                    "time_ratio": wall / ref_wall if ref_wall > 0 else math.nan,
                    "lesion_psnr": {region: mean_ci([_score(r, region, "psnr") for r in recs]) for region in regions},
                    "lesion_ssim": {region: mean_ci([_score(r, region, "ssim") for r in recs]) for region in regions},
                    "paired_difference": paired,
                    "kid": kid,
                    "background_exact_fraction": exact / total if total else math.nan,
                    "seed_spread": self.seed_spread(recs),
                    "records": [
                        {
                            "case_id": r["case_id"],
                            "seed": r["seed"],
                            "scores": r["scores"],
                            "wall_s": r["wall_s"],
                            "network_evaluations": r["network_evaluations"],
                        }
                        for r in recs
                    ],
                }
            )
        by_name = {s["name"]: s for s in settings}
        for s in settings:
            s["meets_goal"] = _goal(s, by_name[reference])
        run_ids = {r["run_id"] for recs in records.values() for r in recs}
        return {
            "study": STUDY,
            "bundle": BUNDLE,
            "reference": reference,
            "goal": GOAL,
            "noise_floor": by_name[reference]["seed_spread"] | {"kid": by_name[reference]["kid"]["seed_spread"]},
            "settings": settings,
            "cases": [c["case_id"] for c in self.cases],
            "seeds": self.seeds,
            "regions": regions,
            "dataset_dir": str(self.dataset_dir or self.datalist),
            "ckpt_dir": str(self.ckpt_dir),
            "overlays": self.overlays,
            "settings_source": self.grid["source"],
            "timing": {
                "single_process": len(run_ids) == 1,
                "processes": len(run_ids),
                "device": str(self.parsers[reference].get_parsed_content("device")),
                "torch_threads": torch.get_num_threads(),
                "host": socket.gethostname(),
            },
            "code": code_commit(),
            "command": self.command or self.default_command(),
            "identity_sha256": hashlib.sha256(json.dumps(as_results(identities), sort_keys=True).encode()).hexdigest(),
        }

    def default_command(self) -> str:
        source = "--dataset_dir DATA" if self.dataset_dir else "--datalist FILE"
        return (
            f"python -m pathosynth.cli sampler_benchmark OUT {source} --ckpt_dir CKPT"
            + "".join(f" --overlays {o}" for o in self.overlays)
            + ("" if self.grid["source"] == "the default grid" else " --settings FILE")
            + " --seeds "
            + " ".join(map(str, self.seeds))
        )

    def seed_spread(self, recs: Sequence[Mapping]) -> dict:
        """Per case, max - min over seeds of the all-lesion PSNR and SSIM; mean and max over cases (None below two
        seeds)."""
        out = {}
        for metric in ("psnr", "ssim"):
            by_case: dict[str, list[float]] = {}
            for r in recs:
                by_case.setdefault(r["case_id"], []).append(_score(r, "all lesions", metric))
            ranges = [max(v) - min(v) for v in by_case.values() if len(v) > 1 and all(map(math.isfinite, v))]
            out[metric] = (
                {"mean": float(np.mean(ranges)), "max": float(np.max(ranges)), "n_cases": len(ranges)}
                if ranges
                else None
            )
        return out


def _score(record: Mapping, region: str, metric: str) -> float:
    value = record["scores"].get(region, {}).get(metric)
    return math.nan if value is None else float(value)


def _paired(recs: Sequence[Mapping], reference: Mapping, metric: str, region: str) -> list[float]:
    """Setting minus reference per (case, seed)."""
    return [_score(r, region, metric) - _score(reference[(r["case_id"], r["seed"])], region, metric) for r in recs]


def _features(recs: Sequence[Mapping], seed: int | None) -> np.ndarray:
    rows = [f for r in recs if seed is None or r["seed"] == seed for f in r["features"]]
    return np.asarray(rows, dtype=np.float64)


def _spread(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) - min(finite) if len(finite) > 1 else math.nan


def _goal(setting: Mapping, reference: Mapping) -> dict:
    """Issue 18's goal per criterion, None where undecidable (e.g. one seed: no KID spread); None as a whole for a
    baseline without a diffusion sampler (e.g. the hand-crafted texture), which the goal is not about."""
    if setting["sampler"].get("network_evaluations_per_sample") is None:
        return None
    dpsnr = setting["paired_difference"]["psnr"]["all lesions"]["mean"]
    dssim = setting["paired_difference"]["ssim"]["all lesions"]["mean"]
    kid, ref_kid, spread = setting["kid"]["value"], reference["kid"]["value"], reference["kid"]["seed_spread"]

    def decided(ok, *inputs):
        return bool(ok) if all(math.isfinite(v) for v in inputs) else None

    checks = {
        "calls": setting["network_evaluations"] <= GOAL["max_network_evaluations"],
        "psnr": decided(dpsnr >= -GOAL["psnr_tolerance_db"], dpsnr),
        "ssim": decided(dssim >= -GOAL["ssim_tolerance"], dssim),
        "kid": decided(kid <= ref_kid + spread, kid, ref_kid, spread),
    }
    checks["all"] = all(v is True for v in checks.values())
    return checks


def sampler_benchmark(
    out_dir,
    dataset_dir,
    ckpt_dir,
    overlays: Sequence[str] = (),
    settings=None,
    seeds: Sequence[int] = (0, 1),
    max_cases: int | None = None,
    patch_size: int = 32,
    bundle_dir=None,
    datalist=None,
) -> Path:
    """Run (or resume) the benchmark; returns the path of ``OUT/sampler_benchmark.json``."""
    return SamplerBenchmark(
        out_dir, dataset_dir, ckpt_dir, overlays, settings, seeds, max_cases, patch_size, bundle_dir, datalist
    ).run()
