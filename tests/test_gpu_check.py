"""`make gpu-check` (python -m pathosynth.gpu_check) works where there is no GPU: the same runs on the CPU, one JSON.

The CPU test runs a subset (lesion_inpainting: its smoke training, its inference, the network timing) to keep the
suite short; every bundle's smoke runs are the bundles' own tests. On a CUDA machine `make gpu-check` runs them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_reports_every_run(tmp_path):
    """The check writes one JSON with the device, versions, per-run pass/fail and seconds, and the lesion network's
    forward time; without CUDA the network is the smoke-size one and no GPU memory is reported; exit status 0."""
    report_path = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pathosynth.gpu_check",
            "--output",
            str(report_path),
            "--bundles",
            "lesion_inpainting",
            "--work_dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["torch"] == torch.__version__ and report["cuda"] == torch.cuda.is_available()
    run = report["bundles"]["lesion_inpainting"]
    assert [(s["workflow"], s["configs"]) for s in run["steps"]] == [
        ("training", ["common.json", "train.json", "smoke.json"]),
        ("inference", ["common.json", "inference.json", "smoke.json"]),
    ], "every run lists the bundle's shared base configs/common.json first"
    assert run["ok"] and all(s["ok"] and s["seconds"] > 0 for s in run["steps"])
    network = report["lesion_network"]
    assert network["ok"] and network["forward_seconds"] > 0 and network["input_shape"][2:] == [72, 72, 10]
    if not report["cuda"]:
        assert not network["paper_size"] and network["peak_memory_mib"] is None and not report["amp"]
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"], "the scratch folder is removed"


def test_gpu_check_refuses_an_unknown_bundle_before_any_run(tmp_path):
    from pathosynth.gpu_check import main

    with pytest.raises(SystemExit, match=r"--bundles names no bundle: \['no_such_bundle'\]"):
        main(output=str(tmp_path / "r.json"), bundles="lesion_inpainting,no_such_bundle", work_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())
