"""Resume after a kill, two-process (gloo) training and sharded synthesis, and the real EMIDEC data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from test_lesion_inpainting_bundle import _arrays, _infer, _train, check_synthetic_dataset

from conftest import ROOT, bundle_configs

pytestmark = pytest.mark.slow


def _bundle_cmd(workflow, configs, overrides, nproc=None):
    files = str(bundle_configs("lesion_inpainting", *configs))
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc
        else [sys.executable]
    )
    cmd = launcher + ["-m", "monai.bundle", "run", workflow, "--config_file", files]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def _run(cmd, timeout=600):
    proc = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_killed_training_resumes(phantom_dir, tmp_path):
    """SIGKILL mid-training, rerun the same command: it continues from the last checkpoint, not from zero."""
    ckpt = tmp_path / "ckpt"
    overrides = {
        "dataset_dir": phantom_dir,
        "ckpt_dir": ckpt,
        "output_dir": tmp_path / "logs",
        "max_steps": 60,
        "max_cases": 2,
    }
    cmd = _bundle_cmd("training", ["train.json", "smoke.json"], overrides)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = ckpt / "lefusion_j_latest.pt"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "no checkpoint appeared before the kill"
    saved_epoch = torch.load(latest, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 30, "the run must be killed before it finished"
    rerun = _run(cmd)
    assert f"at epoch {saved_epoch}" in rerun.stdout + rerun.stderr
    final = torch.load(latest, weights_only=True)
    assert final["epoch"] == 30 and final["iteration"] == 60
    assert not list(ckpt.glob(".*")), "no temporary checkpoint files are left behind"


def test_two_processes_train_and_shard_synthesis_like_one(phantom_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP training writes one checkpoint; sharded synthesis gives
    exactly (bitwise) the cases a single process gives with the same seeds, merged into one datalist."""
    ckpt = tmp_path / "ckpt"
    _run(
        _bundle_cmd(
            "training",
            ["train.json", "multi_gpu_train.json", "smoke.json"],
            {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": tmp_path / "logs"},
            nproc=2,
        )
    )
    assert (ckpt / "lefusion_j.pt").exists()
    two = tmp_path / "two"
    one = tmp_path / "one"
    overrides = {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "num_samples_per_case": 2}
    proc = _run(
        _bundle_cmd(
            "inference",
            ["inference.json", "multi_gpu_inference.json", "smoke.json"],
            {**overrides, "output_dir": two},
            nproc=2,
        )
    )
    assert "rank 1/2" in proc.stdout + proc.stderr
    _infer(phantom_dir, ckpt, one, num_samples_per_case=2)
    entries = check_synthetic_dataset(two, phantom_dir)
    assert len(entries) == 8
    for entry in entries:
        assert np.array_equal(_arrays(two / entry["image"]), _arrays(one / entry["image"])), entry["case_id"]
    assert {e["case_id"] for e in json.loads((one / "datalist.json").read_text())["training"]} == {
        e["case_id"] for e in entries
    }


@pytest.mark.realdata
def test_real_emidec_train_and_synthesise(emidec_dir, tmp_path):
    """On real EMIDEC volumes (256x256, 4-10 thick slices): background bit-exact, lesions re-synthesised."""
    ckpt = tmp_path / "ckpt"
    _train(emidec_dir, ckpt, tmp_path / "logs", max_cases=6)
    out = tmp_path / "out"
    _infer(emidec_dir, ckpt, out, max_cases=3)
    entries = check_synthetic_dataset(out, emidec_dir)
    assert len(entries) == 3
