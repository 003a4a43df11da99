"""The synthetic-dataset writer's contract on its output folder (issue 17 defects 1, 3, 6, 8; issue 20's one writer).

A folder holds the outputs of one identity (bundle, checkpoints, settings, seed, format): a rerun with anything
different is refused before any synthesis, naming what differs, unless ``overwrite`` starts it over (deleting only
the writer's files); more cases or samples under the same identity resume it. One writer at a time (a lock); inputs
(dataset folder, datalist, case files) are never written; sample counts and unwritable folders are errors before work.
The unit tests drive the writer through :class:`SynthesisRunner` with a trivial synthesiser; the bundle tests run
``python -m monai.bundle run inference`` (lesion_inpainting, hand-crafted texture: no training needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import run_bundle, tree_digest
from pathosynth.engines.synthesis import SynthesisRunner
from pathosynth.io.output_folder import IDENTITY_FILE, LOCK_FILE, OutputFolderLock
from pathosynth.io.synthetic_dataset import OutputFolderError, SampleCountError
from pathosynth.synthesis.results import SynthesisResult


class Brightener:
    """A synthesiser with settings (its "variant"): adds ``gain`` (+ seeded noise) inside the label; counts calls."""

    def __init__(self, gain: float = 10.0, name: str = "bright") -> None:
        self.gain, self.name, self.calls = gain, name, 0

    def settings(self) -> dict:
        return {"method": self.name, "gain": self.gain}

    def synthesize_case(self, record, seed):
        self.calls += 1
        image = np.asanyarray(nib.load(record["image"]).dataobj)
        label = np.asanyarray(nib.load(record["label"]).dataobj)
        noise = np.random.default_rng(seed).normal(0, 1, image.shape)
        out = np.where(label > 0, image + self.gain + noise, image).astype(image.dtype)
        return SynthesisResult(out, label.copy(), label > 0, {"gain": self.gain})


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three tiny cases (float image, uint8 label) in their own dataset folder."""
    root = tmp_path_factory.mktemp("dataset")
    records = []
    for index in range(3):
        image = np.random.default_rng(index).normal(100, 5, (8, 8, 2)).astype(np.float32)
        label = np.zeros((8, 8, 2), np.uint8)
        label[2:5, 2:5, :] = 1
        paths = {key: root / f"case{index}_{key}.nii.gz" for key in ("image", "label")}
        nib.save(nib.Nifti1Image(image, np.eye(4)), paths["image"])
        nib.save(nib.Nifti1Image(label, np.eye(4)), paths["label"])
        records.append({"case_id": f"case{index}", "image": str(paths["image"]), "label": str(paths["label"])})
    return records


def _runner(cases, out, synthesizer=None, **kwargs):
    synthesizer = synthesizer or Brightener()
    kwargs = {"bundle": {"name": "test_bundle", "version": "1.0"}, "preview_cases": 0, "progress": False, **kwargs}
    return SynthesisRunner(cases, synthesizer.synthesize_case, out, **kwargs), synthesizer


def _stamps(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_more_cases_and_samples_under_the_same_identity_resume_the_folder(cases, tmp_path):
    runner, _ = _runner(cases[:2], tmp_path)
    runner.run()
    before = _stamps(tmp_path / "images")
    runner, synthesizer = _runner(cases, tmp_path, num_samples_per_case=2)
    entries = runner.run()["training"]
    assert len(entries) == 6 and synthesizer.calls == 4, "only the new samples of old cases and the new case are made"
    assert all(_stamps(tmp_path / "images")[name] == stamp for name, stamp in before.items())
    identity = json.loads((tmp_path / IDENTITY_FILE).read_text())["identity"]
    assert identity["settings"] == {"synthesizer": "Brightener", "method": "bright", "gain": 10.0}
    assert identity["base_seed"] == 0
    assert identity["bundle"] == {"name": "test_bundle", "version": "1.0"} and identity["image_format"] == "nifti"
    assert not (tmp_path / LOCK_FILE).exists() and not list(tmp_path.rglob(".*")), "no lock or temporary file is left"


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"seed": 1}, "base_seed: 0 in the folder, 1 now"),
        ({"synthesizer": Brightener(name="dark")}, "settings.method: 'bright' in the folder, 'dark' now"),
        ({"synthesizer": Brightener(gain=20.0)}, "settings.gain: 10.0 in the folder, 20.0 now"),
        ({"bundle": {"name": "other", "version": "1.0"}}, "bundle.name: 'test_bundle' in the folder, 'other' now"),
    ],
)
def test_a_rerun_with_anything_different_is_refused_before_synthesis(cases, tmp_path, change, expected):
    _runner(cases[:1], tmp_path)[0].run()
    before = tree_digest(tmp_path)
    runner, synthesizer = _runner(cases, tmp_path, **change)
    with pytest.raises(OutputFolderError) as refusal:
        runner.run()
    message = str(refusal.value)
    assert str(tmp_path.resolve()) in message and expected in message and "--overwrite true" in message
    assert "new output_dir" in message and synthesizer.calls == 0
    assert tree_digest(tmp_path) == before, "the folder is untouched"


def test_another_checkpoint_is_refused_with_the_files_and_hashes(cases, tmp_path):
    first, second = tmp_path / "model_a.pt", tmp_path / "model_b.pt"
    first.write_bytes(b"weights A")
    second.write_bytes(b"weights B")
    out = tmp_path / "out"
    _runner(cases[:1], out, checkpoints=[first])[0].run()
    record = json.loads((out / "provenance" / "case0_syn00.json").read_text())
    assert list(record["checkpoints"]) == [str(first)] and len(record["checkpoints"][str(first)]) == 64
    with pytest.raises(
        OutputFolderError,
        match=r"checkpoints_sha256: \[\"model_a.pt sha256 \w{12}\"\] in the folder, "
        r"\[\"model_b.pt sha256 \w{12}\"\] now",
    ):
        _runner(cases[:1], out, checkpoints=[second])[0].run()
    copy = tmp_path / "elsewhere" / "model_a.pt"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    assert len(_runner(cases, out, checkpoints=[copy])[0].run()["training"]) == 3, "the same weights elsewhere resume"


def test_overwrite_replaces_the_writers_outputs_and_nothing_else(cases, tmp_path):
    _runner(cases, tmp_path, preview_cases=1, num_samples_per_case=2)[0].run()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "images" / "my_drawing.png").write_bytes(b"mine too")
    runner, synthesizer = _runner(cases[:1], tmp_path, seed=5, overwrite=True)
    entries = runner.run()["training"]
    assert [e["case_id"] for e in entries] == ["case0_syn00"] and synthesizer.calls == 1
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert kept == [
        "datalist.json",
        "images/case0_syn00.nii.gz",
        "images/my_drawing.png",
        "labels/case0_syn00.nii.gz",
        "notes.txt",
        IDENTITY_FILE,
        "provenance/case0_syn00.json",
    ], "old outputs gone, user files kept"
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["identity"]["base_seed"] == 5
    assert json.loads((tmp_path / "provenance" / "case0_syn00.json").read_text())["base_seed"] == 5


def test_a_folder_without_identity_is_not_mixed_or_replaced_silently(cases, tmp_path):
    legacy = tmp_path / "legacy"
    _runner(cases[:1], legacy)[0].run()
    (legacy / IDENTITY_FILE).unlink()  # as an older pathosynth left it
    with pytest.raises(
        OutputFolderError,
        match=f"{legacy.resolve()} holds 1 synthetic cases without an {IDENTITY_FILE}"
        " \\(written by an older pathosynth\\)",
    ):
        _runner(cases[:1], legacy)[0].run()
    assert len(_runner(cases, legacy, overwrite=True)[0].run()["training"]) == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "datalist.json").write_text('{"training": []}')
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError, match="already holds datalist.json, which this writer did not create"):
            _runner(cases, foreign, overwrite=overwrite)[0].run()
    assert (foreign / "datalist.json").read_text() == '{"training": []}'


def test_a_second_concurrent_writer_is_refused(cases, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    holder = OutputFolderLock(tmp_path)
    holder.acquire()  # another run writing the folder (flock conflicts between separate opens, even in one process)
    try:
        runner, synthesizer = _runner(cases, tmp_path)
        with pytest.raises(
            OutputFolderError,
            match=f"{tmp_path.resolve()} is being written by another synthesis run "
            r"\(pid \d+ on .*\); wait for it to finish",
        ):
            runner.run()
        assert synthesizer.calls == 0 and not (tmp_path / "provenance").exists()
    finally:
        holder.release()
    assert len(_runner(cases, tmp_path)[0].run()["training"]) == 3, "once the lock is free the run proceeds"


def test_inputs_are_never_inside_the_output_folder(cases, tmp_path):
    dataset = Path(cases[0]["image"]).parent
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": c["image"], "label": c["label"]} for c in cases]}))
    content = datalist.read_bytes()
    with pytest.raises(OutputFolderError, match=f"output_dir {tmp_path.resolve()} contains the input file {datalist}"):
        _runner(cases, tmp_path, inputs=[datalist, None])
    assert datalist.read_bytes() == content and sorted(tmp_path.iterdir()) == [datalist]
    with pytest.raises(OutputFolderError, match=f"is inside the input folder {dataset.resolve()}"):
        _runner(cases, dataset / "synthetic", inputs=[dataset])
    with pytest.raises(OutputFolderError, match=f"contains the input file {cases[0]['image']}"):
        _runner(cases, dataset)
    _runner(cases[:1], tmp_path / "synthetic", inputs=[datalist, "/nonexistent/default/dataset_dir"])[0].run()
    assert datalist.read_bytes() == content, "a subfolder beside the datalist is fine, and the datalist stays as it was"


@pytest.mark.parametrize("value", [0, -1, 1.5, "abc", "2", True, None])
def test_num_samples_per_case_must_be_a_whole_number_of_at_least_one(cases, tmp_path, value):
    with pytest.raises(SampleCountError, match=f"num_samples_per_case must be a whole number >= 1, got {value!r}"):
        _runner(cases, tmp_path / "out", num_samples_per_case=value)
    assert not (tmp_path / "out").exists()


def test_the_synthetic_datalist_records_its_label_semantics_and_other_semantics_refuse_it(cases, tmp_path):
    """A synthetic datalist says what its label values mean, so a bundle configured for other labels refuses it."""
    from pathosynth.data.cases import load_cases
    from pathosynth.data.errors import DatasetError

    runner, _ = _runner(cases, tmp_path / "out", labels={"background": 0, "MI": 1})
    runner.run()
    datalist = tmp_path / "out" / "datalist.json"
    assert json.loads(datalist.read_text())["labels"] == {"0": "background", "1": "MI"}
    assert len(load_cases(datalist=str(datalist), labels={"background": 0, "MI": 1})) == 3
    with pytest.raises(DatasetError, match="label 1"):
        load_cases(datalist=str(datalist), labels={"background": 0, "RV": 1})


def test_an_unwritable_output_folder_is_an_error_before_synthesis(cases, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "synthetic", blocker):  # below a regular file, or a regular file itself: fails even as root
        runner, synthesizer = _runner(cases, out)
        with pytest.raises(OutputFolderError, match=f"output_dir {out.resolve()} is not writable"):
            runner.run()
        assert synthesizer.calls == 0
    images_file = tmp_path / "out"
    (images_file).mkdir()
    (images_file / "images").write_text("a file where the writer needs a folder")
    runner, synthesizer = _runner(cases, images_file)
    with pytest.raises(OutputFolderError, match="is not writable: cannot create .*images"):
        runner.run()
    assert synthesizer.calls == 0 and blocker.read_text() == "not a folder"


# --- through `python -m monai.bundle run`, as a user meets these -----------------------------------------------

BUNDLE, CONFIGS = "lesion_inpainting", ["inference.json", "inference_handcrafted.json", "smoke.json"]


def _infer(dataset, out, **overrides):
    overrides = {"dataset_dir": dataset, "output_dir": out, "max_cases": 2, **overrides}
    return run_bundle("inference", BUNDLE, CONFIGS, overrides)


def _refused(dataset, out, **overrides) -> str:
    """The run fails before any synthesis (no rank was assigned cases) and its last output line is the clear
    message (pathosynth's user-error presentation)."""
    with pytest.raises(AssertionError, match="bundle run failed") as failure:
        _infer(dataset, out, **overrides)
    last = str(failure.value).strip().splitlines()[-1]
    assert last.startswith("pathosynth: error: "), str(failure.value)[-3000:]
    assert "synthetic cases assigned" not in str(failure.value)
    return last


def test_bundle_rerun_with_another_seed_is_refused_and_overwrite_starts_over(phantom_dir, tmp_path):
    out = tmp_path / "synthetic"
    _infer(phantom_dir, out)
    before = tree_digest(out)
    message = _refused(phantom_dir, out, seed=1)
    assert f"output_dir {out.resolve()} holds 2 synthetic cases made with other settings" in message
    assert "base_seed: 0 in the folder, 1 now" in message and "--overwrite true" in message
    assert tree_digest(out) == before, "refused before any synthesis"
    _infer(phantom_dir, out, seed=1, overwrite="true")
    records = [json.loads(p.read_text()) for p in sorted((out / "provenance").glob("*.json"))]
    assert len(records) == 2 and {r["base_seed"] for r in records} == {1}
    assert all(tree_digest(out)[r["image"]] != before[r["image"]] for r in records), "the images are the new seed's"


def test_bundle_refuses_to_write_into_the_folder_of_its_input_datalist(phantom_dir, tmp_path):
    """Defect 1: `--datalist D/datalist.json --output_dir D` overwrote the user's datalist."""
    folder = tmp_path / "D"
    folder.mkdir()
    cases = [
        {"image": str(p / "Images" / f"{p.name}.nii.gz"), "label": str(p / "Contours" / f"{p.name}.nii.gz")}
        for p in sorted(phantom_dir.glob("Case_P*"))
    ]
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": cases}, indent=1))
    before = tree_digest(folder)
    message = _refused(phantom_dir, folder, datalist=datalist)
    assert f"output_dir {folder.resolve()} contains the input file {datalist.resolve()}" in message
    assert tree_digest(folder) == before, "the datalist is byte-identical and nothing was added beside it"


def test_bundle_refuses_a_sample_count_of_zero_by_its_key(phantom_dir, tmp_path):
    message = _refused(phantom_dir, tmp_path / "out", num_samples_per_case=0)
    assert "num_samples_per_case must be a whole number >= 1, got 0" in message
    assert not (tmp_path / "out").exists(), "no empty dataset is written"


def test_bundle_refuses_an_unwritable_output_folder_before_synthesis(phantom_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = _refused(phantom_dir, blocker / "synthetic")
    assert f"output_dir {(blocker / 'synthetic').resolve()} is not writable" in message


def _rank_main(rank: int, store: str, cases: list, out: str, results) -> None:
    """One rank of a 2-process (gloo) group that runs the writer twice into ``out``: with seed 0, then seed 1;
    reports "ok <entries> <calls>" or the refusal, per run."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        for seed in (0, 1):
            try:
                runner, synthesizer = _runner(cases, out, seed=seed)
                results.put((rank, seed, f"ok {len(runner.run().get('training', []))} {synthesizer.calls}"))
            except OutputFolderError as refusal:
                results.put((rank, seed, f"refused {refusal}"))
            except Exception as error:  # any other failure is reported, never left for the test to wait on
                results.put((rank, seed, f"failed {error!r}"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_ranks_of_one_run_share_the_folder_and_a_refusal_reaches_every_rank(cases, tmp_path):
    """torchrun-style: rank 0 holds the lock and claims the folder, rank 1 writes its share beside it; a rerun with
    another seed is refused on both ranks with the same message (no rank is left waiting)."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    args = (str(tmp_path / "store"), cases, str(tmp_path / "out"), results)
    procs = [context.Process(target=_rank_main, args=(rank, *args)) for rank in (0, 1)]
    for proc in procs:
        proc.start()
    outcome = {(rank, seed): text for rank, seed, text in (results.get(timeout=120) for _ in range(4))}
    for proc in procs:
        proc.join(timeout=60)
    assert outcome[0, 0] == "ok 3 2" and outcome[1, 0] == "ok 0 1", "3 cases split 2 + 1, one datalist from rank 0"
    refusal = outcome[0, 1]
    assert refusal.startswith("refused") and "base_seed: 0 in the folder, 1 now" in refusal and outcome[1, 1] == refusal
