"""One command that shows the bundles work on this machine's accelerator: ``make gpu-check``.

Why: the project is developed on CPUs, and its users train on GPUs. This check runs every bundle's smoke training
and inference (``configs/smoke.json``) the way a user runs them (``python -m monai.bundle run``) on phantom data it
generates, with AMP on where a training config offers an ``amp`` key and a GPU is present, then times the forward
pass of the paper-size LeFusion network (channels 64-128-256-256, a 72x72x10 crop, train.json's batch size) and
records its peak GPU memory. Everything lands in one JSON (default ``gpu_check.json``): per run pass/fail, seconds
and the last lines of a failure, plus device name and torch / MONAI versions. On a machine without CUDA the same
runs happen on the CPU and the network timing uses the smoke-size network and batch, so the script itself is
tested where there is no GPU (``--bundles`` picks a subset, as the CPU test does).

Usage: ``python -m pathosynth.gpu_check [--output gpu_check.json] [--bundles lesion_inpainting,...]``; the exit status
is 1 when any run failed.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .bundle_configs import config_files
from .io.atomic import write_json

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
PAPER_LESION_CHANNELS = [64, 128, 256, 256]  # LeFusion's network (lesion_inpainting train.json)


def smoke_plans(data: dict[str, Path]) -> dict[str, dict]:
    """Per bundle, what its own tests run at smoke scale: training runs in order (config, overrides), the workflow
    that trains (``training``, or ``run`` for downstream_segmentation, which trains and scores in one run) and the
    inference overrides (None: the training run already infers)."""
    emidec, acdc = {"dataset_dir": data["emidec"]}, {"dataset_dir": data["acdc"]}
    one = {"max_cases": 1}
    split = data["split"]
    return {
        "lesion_inpainting": {"train": [("train.json", emidec)], "infer": {**emidec, **one}},
        "lesion_mask_diffusion": {"train": [("train.json", emidec)], "infer": {**emidec, **one}},
        "reference_guided_ddpm": {
            "train": [("train.json", emidec)],
            "infer": {**emidec, **one, "num_samples_per_case": 1},
        },
        "label_guided_latent_diffusion": {
            "train": [("train_autoencoder.json", acdc), ("train_diffusion.json", acdc)],
            "infer": {**acdc, **one},
        },
        "text_edge_controlnet": {
            "train": [("train_diffusion.json", acdc), ("train_controlnet.json", acdc)],
            "infer": {**acdc, **one, "num_samples_per_case": 1},
        },
        "class_conditional_ddpm": {
            "train": [("train.json", {"dataset_dir": data["npz"]})],
            "infer": {"num_per_class": 1, "preview_per_class": 1},
        },
        "downstream_segmentation": {
            "workflow": "run",
            "infer": None,
            "train": [
                (
                    "train.json",
                    {
                        "train_datalists": [str(split / "train_pathological.json"), str(split / "train_normal.json")],
                        "test_datalist": split / "test.json",
                    },
                )
            ],
        },
    }


def make_phantom_data(root: Path) -> dict[str, Path]:
    """The embedded phantoms every plan reads: EMIDEC-like and ACDC-like volumes, a two-class 16x16 MedMNIST-style
    npz (dark vs bright upper half) and a train/test split of the EMIDEC-like set. Not real data."""
    from .data.medmnist import write_toy_medmnist_npz
    from .data.phantom import generate_acdc_like_dataset, generate_emidec_like_dataset
    from .data.splits import write_split

    generate_emidec_like_dataset(root / "emidec", n_normal=2, n_pathological=4, seed=7, in_plane=96)
    generate_acdc_like_dataset(root / "acdc", n_patients=4, seed=7, in_plane=96)
    npz = write_toy_medmnist_npz(root / "npz" / "toymnist.npz")
    write_split(root / "emidec", root / "split", test_fraction=0.5)
    return {"emidec": root / "emidec", "acdc": root / "acdc", "npz": npz.parent, "split": root / "split"}


def _has_key(configs: Sequence[Path], key: str) -> bool:
    return any(key in json.loads(config.read_text()) for config in configs)


def _bundle_run(workflow: str, configs: Sequence[Path], overrides: dict, cwd: Path, timeout: float) -> dict:
    """``python -m monai.bundle run`` in a subprocess; its seconds, success and, on failure, the last output lines."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", str([str(c) for c in configs])]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
        ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        ok, tail = False, f"timed out after {timeout:.0f} s"
    step = {
        "workflow": workflow,
        "configs": [c.name for c in configs],
        "seconds": round(time.perf_counter() - start, 2),
        "ok": ok,
    }
    if overrides.get("amp"):
        step["amp"] = True
    if not ok:
        step["error"] = tail
    return step


def check_bundle(bundle: str, plan: dict, work: Path, amp: bool, timeout: float) -> dict:
    """Smoke training (every run of the plan) then inference of one bundle; stops at the first failure."""
    configs = BUNDLES_DIR / bundle / "configs"
    ckpt, steps = work / "ckpt" / bundle, []
    workflow = plan.get("workflow", "training")
    for config, overrides in plan["train"]:
        files = config_files(configs, [config, "smoke.json"])
        extra = {"amp": True} if amp and _has_key(files, "amp") else {}
        where = {"output_dir": ckpt} if workflow == "run" else {"ckpt_dir": ckpt, "output_dir": ckpt / "logs"}
        steps.append(_bundle_run(workflow, files, {**overrides, **where, **extra}, work, timeout))
        if not steps[-1]["ok"]:
            break
    if plan["infer"] is not None and all(s["ok"] for s in steps):
        steps.append(
            _bundle_run(
                "inference",
                config_files(configs, ["inference.json", "smoke.json"]),
                {**plan["infer"], "ckpt_dir": ckpt, "output_dir": work / "synthetic" / bundle},
                work,
                timeout,
            )
        )
    return {"ok": all(s["ok"] for s in steps), "seconds": round(sum(s["seconds"] for s in steps), 2), "steps": steps}


def lesion_network_forward(device: torch.device, paper_size: bool, amp: bool, repeats: int = 5) -> dict:
    """Forward time (median of ``repeats`` after one warm-up) and peak CUDA memory of lesion_inpainting's
    ``network_def`` on a batch of 72x72x10 crops: paper size (train.json's channels and batch) on a GPU, the smoke
    network and batch on a CPU."""
    from monai.bundle import ConfigParser

    configs = BUNDLES_DIR / "lesion_inpainting" / "configs"
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(configs, ["train.json"] + ([] if paper_size else ["smoke.json"]))])
    network = parser.get_parsed_content("network_def").to(device).eval()
    batch, roi = int(parser["batch_size"]), list(parser["roi_size"])
    channels = list(parser["network_def"]["channels"])
    in_channels, out_channels = (
        int(parser.get_parsed_content(f"network_def#{key}")) for key in ("in_channels", "out_channels")
    )
    images = torch.randn(batch, in_channels, *roi, device=device)
    timesteps = torch.randint(0, int(parser["num_train_timesteps"]), (batch,), device=device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    with torch.no_grad(), torch.autocast(device.type, enabled=amp and cuda):
        for _ in range(repeats + 1):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            out = network(images, timesteps)
            if cuda:
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    assert tuple(out.shape) == (batch, out_channels, *roi), out.shape
    return {
        "channels": channels,
        "paper_size": paper_size and channels == PAPER_LESION_CHANNELS,
        "batch_size": batch,
        "input_shape": list(images.shape),
        "amp": amp and cuda,
        "forward_seconds": round(float(np.median(seconds[1:])), 4),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None,
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def main(
    output: str = "gpu_check.json",
    bundles: str | Sequence[str] | None = None,
    work_dir: str | None = None,
    timeout: float = 600,
) -> int:
    """Run the check and write ``output``; returns (and exits with) 1 when any run failed."""
    import monai

    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    names = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "metadata.json").is_file())
    if isinstance(bundles, str):
        bundles = bundles.split(",")
    chosen = names if bundles is None else [b.strip() for b in bundles]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"--bundles names no bundle: {unknown}; bundles: {', '.join(names)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        work = Path(scratch)
        plans = smoke_plans(make_phantom_data(work / "data"))
        results = {}
        for bundle in chosen:
            results[bundle] = check_bundle(bundle, plans[bundle], work, amp=cuda, timeout=timeout)
            outcome = "ok" if results[bundle]["ok"] else "FAILED"
            print(f"{bundle}: {outcome} ({results[bundle]['seconds']} s)", flush=True)
    try:
        network = {"ok": True, **lesion_network_forward(device, paper_size=cuda, amp=cuda)}
    except Exception as err:  # noqa: BLE001 - recorded in the report, which must be written whatever failed
        network = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    report = {
        "ok": all(r["ok"] for r in results.values()) and network["ok"],
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "cuda": cuda,
        "scale": "smoke runs; paper-size lesion network" if cuda else "smoke runs and smoke-size network (no GPU)",
        "amp": cuda,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "cuda_version": torch.version.cuda,
        "seconds": round(time.perf_counter() - start, 1),
        "bundles": results,
        "lesion_network": network,
    }
    write_json(output, report)
    print(f"{'ok' if report['ok'] else 'FAILED'}: {output} ({report['seconds']} s on {report['device']})", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(prog="python -m pathosynth.gpu_check", description=__doc__.split("\n\n")[0])
    cli.add_argument("--output", default="gpu_check.json", help="the JSON report to write")
    cli.add_argument("--bundles", default=None, help="comma-separated subset of bundles (default: all)")
    cli.add_argument("--work_dir", default=None, help="where the scratch folder goes (default: the system's temp)")
    cli.add_argument("--timeout", type=float, default=600, help="seconds per bundle run")
    sys.exit(main(**vars(cli.parse_args())))
