"""A checkpoint knows what it was trained on (issue 17, defects 5, 7 and 8).

- A reused ckpt_dir with other data or other settings stops before any step, saying what differs; a finished
  run says so and trains and rewrites nothing (it used to log "resumed ... epoch 2", run 0 steps and exit 0).
- A broken, truncated or foreign checkpoint is an error naming the file and the problem (never a raw torch
  error, never a hint to load it with weights_only=False).
- A checkpoint folder that cannot be written is reported before training, not at the first save.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from ignite.engine import Engine

from conftest import BUNDLES, run_bundle, tree_digest
from pathosynth.engines.checkpoint import (
    ResumableCheckpoint,
    dataset_fingerprint,
    load_weights,
    read_checkpoint,
)
from pathosynth.errors import MissingInputError, UserInputError

BUNDLE = "lesion_inpainting"


def _cases(root):
    return [{"case_id": p.name, "image": str(p / "image.nii.gz")} for p in sorted(root.iterdir()) if p.is_dir()]


@pytest.fixture()
def data(tmp_path):
    """Three fake cases whose files are gzip-like: the fingerprint reads both ends of each."""
    root = tmp_path / "data"
    for i in range(3):
        (root / f"Case_{i}").mkdir(parents=True)
        (root / f"Case_{i}" / "image.nii.gz").write_bytes(bytes(range(256)) * 1024 + bytes([i]) * 8)
    return root


def _train(ckpt_dir, cases, max_epochs=2, metadata=None, **kwargs):
    torch.manual_seed(0)
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

    def step(engine, batch):
        optimizer.zero_grad()
        network(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    engine = Engine(step)
    handler = ResumableCheckpoint(
        ckpt_dir, "model", network, optimizer, metadata=metadata or {"roi_size": [8, 8, 4]}, cases=cases, **kwargs
    )
    handler.attach(engine)
    engine.run([0, 1], max_epochs=max_epochs)
    return engine


def test_every_training_config_gives_its_checkpoint_the_cases():
    target = "pathosynth.engines.checkpoint.ResumableCheckpoint"
    configs = [f for f in sorted(BUNDLES.glob("*/configs/*.json")) if target in f.read_text()]
    assert len(configs) >= 11
    for config in configs:
        handlers = [h for h in _components(json.loads(config.read_text())) if h["_target_"] == target]
        assert handlers and all(h.get("cases") in ("@train#cases", "@train#records") for h in handlers), config


def _components(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield node
        for value in node.values():
            yield from _components(value)
    elif isinstance(node, list):
        for value in node:
            yield from _components(value)


def test_fingerprint_follows_content_not_location_or_mtime(data, tmp_path):
    before = dataset_fingerprint(_cases(data))
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)  # new paths and mtimes, same bytes
    os.utime(moved / "Case_1" / "image.nii.gz", (1, 1))
    assert dataset_fingerprint(_cases(moved)) == before
    blob = bytearray((moved / "Case_1" / "image.nii.gz").read_bytes())
    blob[-1] ^= 1  # a gzip file's last bytes are the CRC-32 and size of all its content
    (moved / "Case_1" / "image.nii.gz").write_bytes(bytes(blob))
    after = dataset_fingerprint(_cases(moved))
    assert after["fingerprint"] != before["fingerprint"]
    assert [k for k in after["cases"] if after["cases"][k] != before["cases"][k]] == ["Case_1"]


def test_resume_with_other_data_or_settings_stops_before_any_step(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    _train(ckpt, _cases(data))
    saved = tree_digest(ckpt)
    with pytest.raises(UserInputError, match=r"1 only in the checkpoint's data \(Case_2\).*new --ckpt_dir"):
        _train(ckpt, _cases(data)[:2], max_epochs=4)
    with pytest.raises(UserInputError, match=r"roi_size: \[8, 8, 4\] in the checkpoint, \[16, 16, 4\] now"):
        _train(ckpt, _cases(data), max_epochs=4, metadata={"roi_size": [16, 16, 4]})
    assert tree_digest(ckpt) == saved
    assert _train(ckpt, _cases(data), max_epochs=3).state.iteration == 6  # same data and settings: it continues
    inference = torch.load(ckpt / "model.pt", weights_only=True)["metadata"]
    assert inference["dataset"] == {k: dataset_fingerprint(_cases(data))[k] for k in ("fingerprint", "count")}


def test_a_base_model_file_is_compared_by_content_not_path(data, tmp_path):
    """A ControlNet records the diffusion checkpoint it was trained on as {path, sha256}: a moved file still resumes,
    a retrained one does not."""
    ckpt = tmp_path / "ckpt"
    _train(ckpt, _cases(data), metadata={"base": {"path": "/old/diffusion.pt", "sha256": "abc"}})
    assert _train(ckpt, _cases(data), max_epochs=3, metadata={"base": {"path": "/new/diffusion.pt", "sha256": "abc"}})
    with pytest.raises(UserInputError, match="base: .*'sha256': 'abc'.* in the checkpoint, .*'sha256': 'def'.* now"):
        _train(ckpt, _cases(data), max_epochs=4, metadata={"base": {"path": "/new/diffusion.pt", "sha256": "def"}})


def test_finished_run_says_so_and_rewrites_nothing(data, tmp_path, caplog):
    ckpt = tmp_path / "ckpt"
    _train(ckpt, _cases(data))
    saved = tree_digest(ckpt)
    with caplog.at_level(logging.WARNING, logger="pathosynth.engines.checkpoint"):
        engine = _train(ckpt, _cases(data))
    assert engine.state.iteration == 4
    assert (
        f"training already finished at step 4 of max_steps 4 in {ckpt}; "
        "nothing to do (raise max_steps or use a new ckpt_dir)"
    ) in caplog.text
    assert tree_digest(ckpt) == saved


def test_checkpoint_without_fingerprint_still_resumes(data, tmp_path, caplog):
    ckpt = tmp_path / "ckpt"
    _train(ckpt, _cases(data))
    old = torch.load(ckpt / "model_latest.pt", weights_only=True)
    del old["dataset"], old["metadata"]  # as written before checkpoints recorded them
    torch.save(old, ckpt / "model_latest.pt")
    with caplog.at_level(logging.INFO, logger="pathosynth.engines.checkpoint"):
        assert _train(ckpt, _cases(data)[:1], max_epochs=3).state.iteration == 6
    assert "records no dataset fingerprint (an older checkpoint)" in caplog.text


def _broken_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"network": torch.nn.Linear(2, 2).state_dict(), "metadata": {}}, good)
    files = {
        "truncated or corrupted": good.read_bytes()[:300],
        "is empty": b"",
        "not a PyTorch checkpoint": b"hello world",
    }
    for problem, blob in files.items():
        (tmp_path / f"{problem}.pt").write_bytes(blob)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled Python objects.pt")
    torch.save([1, 2], tmp_path / "not a checkpoint dict.pt")
    torch.save({"network": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "does not fit this network.pt")
    (tmp_path / "is a folder.pt").mkdir()
    return [p for p in tmp_path.glob("*.pt") if p != good]


def test_broken_or_foreign_checkpoints_name_the_file_and_the_problem(tmp_path):
    files = _broken_files(tmp_path)
    assert len(files) == 7
    for path in files:
        with pytest.raises(UserInputError) as err:
            load_weights(torch.nn.Linear(2, 2), path)
        message = str(err.value)
        assert str(path) in message and path.stem.split(" ", 1)[1] in message, message
        assert "weights_only" not in message
    with pytest.raises(MissingInputError, match="does not exist; train first"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "missing.pt")
    assert isinstance(MissingInputError("x"), FileNotFoundError)


def test_broken_resume_checkpoint_is_named_at_construction(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    _train(ckpt, _cases(data))
    latest = ckpt / "model_latest.pt"
    latest.write_bytes(latest.read_bytes()[:500])
    with pytest.raises(UserInputError, match=f"checkpoint {latest} is truncated or corrupted"):
        _train(ckpt, _cases(data), max_epochs=3)
    with pytest.raises(UserInputError, match="not a checkpoint dict"):
        torch.save([1], latest)
        read_checkpoint(latest)


def test_unwritable_checkpoint_folder_is_reported_first(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root ignores permission bits, a regular file in the path stops anyone
    with pytest.raises(UserInputError, match=f"ckpt_dir {blocker / 'ckpt'} is not a folder this run can write to"):
        _train(blocker / "ckpt", _cases(data))


# --- through the bundle, as the sweep found them -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(phantom_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("guard") / "ckpt"
    run_bundle(
        "training",
        BUNDLE,
        ["train.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": ckpt.parent / "logs"},
    )
    return ckpt


def _train_bundle(dataset, ckpt, tmp_path):
    return run_bundle(
        "training",
        BUNDLE,
        ["train.json", "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": tmp_path / "logs"},
        check=False,
    )


def _last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_bundle_rerun_on_a_finished_ckpt_dir(phantom_dir, trained, tmp_path):
    saved = tree_digest(trained)
    again = _train_bundle(phantom_dir, trained, tmp_path)
    assert again.returncode == 0
    assert f"training already finished at step 4 of max_steps 4 in {trained}" in again.stdout + again.stderr
    other = tmp_path / "other_data"
    shutil.copytree(phantom_dir, other)
    shutil.rmtree(other / "Case_P004")
    proc = _train_bundle(other, trained, tmp_path)
    assert proc.returncode == 1
    assert _last_line(proc).startswith(
        f"pathosynth: error: ckpt_dir {trained} holds a lefusion_j training that differs"
    )
    assert "1 only in the checkpoint's data (Case_P004)" in _last_line(proc) and "Give a new --ckpt_dir" in _last_line(
        proc
    )
    assert "Epoch[1] Complete" not in proc.stdout + proc.stderr
    assert tree_digest(trained) == saved


@pytest.mark.slow
def test_bundle_inference_names_a_truncated_checkpoint(phantom_dir, trained, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "lefusion_j.pt").write_bytes((trained / "lefusion_j.pt").read_bytes()[:1000])
    proc = run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": tmp_path / "out"},
        check=False,
    )
    assert proc.returncode == 1
    assert _last_line(proc).startswith(
        f"pathosynth: error: checkpoint {ckpt / 'lefusion_j.pt'} is truncated or corrupted"
    )


@pytest.mark.slow
def test_bundle_unwritable_ckpt_dir_stops_before_training(phantom_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = _train_bundle(phantom_dir, blocker / "ckpt", tmp_path)
    assert proc.returncode == 1
    expected = f"pathosynth: error: ckpt_dir {blocker / 'ckpt'} is not a folder this run can write to"
    assert _last_line(proc).startswith(expected)
    assert "Epoch[1] Complete" not in proc.stdout + proc.stderr
