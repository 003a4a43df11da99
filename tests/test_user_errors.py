"""Bad user input ends a run with one clear message as its last line (issue 17, defects 6 and 11).

Command-line overrides of ``monai.bundle run`` are checked by key before any work: a misspelt key names the
closest known one, a value of the wrong type or length names the key, the expected form and the value. A run
that fails on bad input (a UserInputError or DatasetError anywhere in the exception chain) ends with
``pathosynth: error: <message>``; the chained traceback only with PATHOSYNTH_DEBUG=1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import monai
import pytest

from conftest import BUNDLES, ROOT, run_bundle
from pathosynth.data.errors import DatasetError
from pathosynth.errors import UserInputError, user_error_in
from pathosynth.options import bundle_command_line, override_problems

CONFIG = {
    "roi_size": [72, 72, 10],
    "max_steps": 50000,
    "learning_rate": 1e-4,
    "amp": False,
    "datalist": None,
    "unet_channels": [64, 128, 256],
    "labels": {"MI": 3},
    "ckpt_dir": "$@bundle_root + '/models'",
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@net.parameters()", "lr": "@learning_rate"},
    "train": {"handlers": [], "batch": {"size": 2}},
}


def _problems(**overrides) -> list[str]:
    return override_problems(CONFIG, overrides, ["train.json"])


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_legitimate_overrides_pass():
    assert (
        _problems(
            roi_size=[48, 48, 8],
            max_steps=4,
            learning_rate=1,
            amp="false",
            datalist="/d/list.json",
            unet_channels=[8, 16],
            labels={"MI": 2},
            ckpt_dir="/tmp/c",
            **{"optimizer#lr": 0.1, "optimizer#eps": 1e-3, "train#batch#size": 4},
        )
        == []
    )
    # expressions are not typed, a null default takes anything, None is not applied by monai.bundle run
    assert _problems(amp=True, max_steps="$10 * 4", roi_size="@other", datalist=[1, 2], no_such_key=None) == []


def test_misspelt_key_names_the_closest_known_key():
    assert _problems(roi_sise=[48, 48, 10]) == [
        "--roi_sise is not a config key (not in train.json); did you mean --roi_size?"
    ]
    assert "did you mean --train#batch#size?" in _problems(**{"train#batch#sise": 4})[0]
    # a component argument its target does not take: named with the target's closest arguments
    assert _problems(**{"optimizer#l": 0.1}) == [
        "--optimizer#l: torch.optim.Adam has no argument 'l'; did you mean --optimizer#lr?"
    ]


def test_wrong_type_or_length_names_key_form_and_value():
    assert _problems(roi_size=[48, 48]) == ["--roi_size expects 3 entries like its default [72, 72, 10], got [48, 48]"]
    assert _problems(max_steps="abc") == ["--max_steps expects an integer like its default 50000, got 'abc'"]
    assert _problems(max_steps=1.5) == ["--max_steps expects an integer like its default 50000, got 1.5"]
    assert _problems(max_steps=[4, 4, 1]) == []  # a number may be given per spatial dimension (a factor per axis)
    assert _problems(max_steps=[4, 0.5]) == ["--max_steps expects an integer like its default 50000, got [4, 0.5]"]
    assert _problems(amp="maybe") == ["--amp expects true or false like its default False, got 'maybe'"]
    assert _problems(learning_rate="fast") == ["--learning_rate expects a number like its default 0.0001, got 'fast'"]
    assert _problems(unet_channels=[8, "a"]) == [
        "--unet_channels expects a list of integers like its default [64, 128, 256], got [8, 'a']"
    ]
    assert _problems(labels=3) == ["--labels expects a dict like its default {'MI': 3}, got 3"]
    three_d = {"spatial_dims": 3, "image_size": [32, 32]}  # a 2-D smoke size under volumes_3d.json's spatial_dims
    assert override_problems(three_d, {"image_size": [16, 16, 8]}) == []
    assert override_problems(three_d, {"image_size": [16]}) == [
        "--image_size expects 2 entries like its default [32, 32] or one per spatial dimension (spatial_dims 3), "
        "got [16]"
    ]


def test_every_workflow_checks_its_command_line_first():
    """Each config with an "initialize" (base workflows and the multi-GPU overlays that replace it) runs the check
    before anything else, so no workflow starts work on a misspelt key."""
    files = sorted(BUNDLES.glob("*/configs/**/*.json"))
    workflows = {f: json.loads(f.read_text())["initialize"] for f in files if '"initialize"' in f.read_text()}
    assert len(workflows) > 30
    assert {
        str(f.relative_to(BUNDLES)): steps[0]
        for f, steps in workflows.items()
        if steps[0] != "$pathosynth.options.check_overrides()"
    } == {}


def test_command_line_is_read_as_monai_bundle_run_reads_it():
    main = str(Path(monai.__file__).parent / "bundle" / "__main__.py")  # sys.argv[0] of python -m monai.bundle
    parsed = bundle_command_line(
        [
            main,
            "run",
            "training",
            "--config_file",
            "['a.json','b.json']",
            "--roi_size",
            "[48,48]",
            "--max_steps=abc",
            "--amp",
            "--seed",
            "-1",
        ]
    )
    assert parsed == {
        "command": "run",
        "args": {
            "run_id": "training",
            "config_file": ["a.json", "b.json"],
            "roi_size": [48, 48],
            "max_steps": "abc",
            "amp": True,
            "seed": -1,
        },
    }
    assert bundle_command_line(["pytest", "run", "--x", "1"]) is None  # not a bundle run: nothing is checked
    assert bundle_command_line([main, "verify_metadata", "--x", "1"]) is None


def test_user_error_is_found_anywhere_in_the_exception_chain():
    try:
        try:
            raise DatasetError("Case_P003: label file missing")
        except DatasetError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression") from err
    except RuntimeError as outer:
        assert str(user_error_in(outer)) == "Case_P003: label file missing"
    assert issubclass(DatasetError, UserInputError) and issubclass(UserInputError, ValueError)
    assert user_error_in(RuntimeError("a bug")) is None


SCRIPT = """
import pathosynth
from pathosynth.errors import UserInputError
try:
    raise UserInputError("roi_size must have 3 entries")
except UserInputError as err:
    raise RuntimeError("Failed to evaluate ConfigExpression") from err
"""


@pytest.mark.parametrize("debug", [False, True])
def test_failed_process_ends_with_the_message(debug):
    env = {"PATH": "/usr/bin:/bin", "PATHOSYNTH_DEBUG": "1" if debug else "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1
    assert _last_line(proc.stderr) == "pathosynth: error: roi_size must have 3 entries"
    assert ("RuntimeError: Failed to evaluate ConfigExpression" in proc.stderr) is debug  # the traceback only to debug
    bug = subprocess.run(
        [sys.executable, "-c", "import pathosynth; raise KeyError('a bug')"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert _last_line(bug.stderr) == "KeyError: 'a bug'"  # a bug keeps its traceback
    assert "pathosynth: error" not in bug.stderr


def _smoke(bundle: str, overrides: dict, tmp_path, configs=("train.json",), nproc=None):
    overrides = {"ckpt_dir": tmp_path / "ckpt", "output_dir": tmp_path / "out", **overrides}
    return run_bundle("training", bundle, [*configs, "smoke.json"], overrides, check=False, nproc=nproc)


@pytest.mark.slow
def test_bundle_run_refuses_a_misspelt_override_before_work(phantom_dir, tmp_path):
    proc = _smoke("lesion_inpainting", {"dataset_dir": phantom_dir, "roi_sise": "[48,48,10]"}, tmp_path)
    assert proc.returncode != 0
    assert _last_line(proc.stderr) == (
        "pathosynth: error: --roi_sise is not a config key (not in common.json, train.json, smoke.json); "
        "did you mean --roi_size?"
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_bundle_run_names_wrong_length_and_type(phantom_dir, tmp_path):
    """lesion_mask_diffusion aborted with rc 134 inside torch on --roi_size [48,48]."""
    proc = _smoke(
        "lesion_mask_diffusion", {"dataset_dir": phantom_dir, "roi_size": "[48,48]", "max_steps": "abc"}, tmp_path
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-3:] == [
        "pathosynth: error: 2 command-line overrides are wrong:",
        "  --roi_size expects 3 entries like its default [72, 72, 10], got [48, 48]",
        "  --max_steps expects an integer like its default 4, got 'abc'",
    ]  # smoke.json's max_steps is the default here


@pytest.mark.slow
def test_bundle_run_on_bad_data_ends_with_the_dataset_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _smoke("reference_guided_ddpm", {"dataset_dir": empty}, tmp_path)
    assert proc.returncode == 1
    assert _last_line(proc.stderr).startswith(f"pathosynth: error: dataset_dir {empty} matches no known layout")
    assert "Failed to evaluate ConfigExpression" not in proc.stderr


@pytest.mark.slow
def test_torchrun_summary_shows_the_message(phantom_dir, tmp_path):
    """Under torchrun every rank stops at the same check; the launcher's failure summary carries the message."""
    proc = _smoke(
        "lesion_inpainting",
        {"dataset_dir": phantom_dir, "roi_sise": "[48,48,10]"},
        tmp_path,
        configs=("train.json", "multi_gpu_train.json"),
        nproc=2,
    )
    assert proc.returncode != 0
    message = "pathosynth: error: --roi_sise is not a config key"
    assert f"traceback : {message}" in proc.stderr and "To enable traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_ends_with_the_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pathosynth.cli", "validate", "--dataset_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert _last_line(proc.stderr).startswith(f"pathosynth: error: dataset_dir {tmp_path} matches no known layout")
