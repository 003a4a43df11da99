"""The one-command LeFusion study (Tab. 1/Tab. 2 re-run) in its CI-sized form on phantom data.

Claims checked: every phase runs from the bundles' configs; no model or synthetic case ever sees a test
case; N' is a subset of N''; the report holds every method and training mix with its seeds; the dataset
is only read; a rerun does nothing, and removing one finished step reruns exactly that step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tree_digest
from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.data.phantom import generate_emidec_like_dataset
from pathosynth.studies.lefusion_study import LeFusionStudy, slug, training_mixes
from pathosynth.studies.reports import render_report


def _sources(datalist: Path) -> set[str]:
    """EMIDEC case ids of the real images a synthetic datalist was made from (``Case_X/Images/Case_X.nii.gz``)."""
    return {Path(e["source_image"]).parts[-3] for e in json.loads(datalist.read_text())["training"]}


def _case_ids(datalist: str) -> set[str]:
    return {Path(r["image"]).parts[-3] for r in load_cases(datalist=datalist, labels=EMIDEC_LABELS)}


def test_training_mixes_follow_table_1():
    mixes = training_mixes("P.json", {"Hand-crafted": "h.json", "LeFusion-J": "j.json"}, "n1.json", "n2.json")
    assert mixes["P"] == ["P.json"]
    assert mixes["P+P′ Hand-crafted"] == ["P.json", "h.json"]
    assert mixes["P+N′ (LeFusion-J+DiffMask)"] == ["P.json", "n1.json"]
    assert mixes["P+P′+N″ (LeFusion-J+DiffMask)"] == ["P.json", "j.json", "n2.json"]
    assert slug("P+P′+N″ (LeFusion-J+DiffMask)") == "P+Pp+Npp_LeFusion-J+DiffMask"


def test_study_refuses_to_write_into_the_dataset(phantom_dir):
    with pytest.raises(ValueError, match="only read"):
        LeFusionStudy(phantom_dir, phantom_dir / "study", "ci")
    with pytest.raises(FileNotFoundError, match="huge"):
        LeFusionStudy(phantom_dir, "/tmp/elsewhere", "huge")


@pytest.mark.slow
def test_lefusion_study_end_to_end_at_ci_scale(tmp_path):
    data = tmp_path / "data"
    generate_emidec_like_dataset(data, n_normal=3, n_pathological=5, seed=11, in_plane=96)
    before = tree_digest(data)
    study = LeFusionStudy(data, tmp_path / "study", "ci")
    report = study.run()

    # the split is by case and nothing trained or synthesised touches a test case
    split = json.loads((study.out / "split" / "split.json").read_text())
    test_cases = set(split["test"])
    assert test_cases and not test_cases & set(split["train"])
    for job in study.training_jobs():
        assert not _case_ids(job.settings["datalist"]) & test_cases
    assert _sources(study.synthetic_dir("tab2", "LeFusion-J") / "datalist.json") <= test_cases
    for method in study.methods:
        assert not _sources(study.synthetic_dir("P_prime", method) / "datalist.json") & test_cases
    n_double = study.synthetic_dir("N_double_prime", "LeFusion-J+DiffMask")
    assert _sources(n_double / "datalist.json") <= {c for c in split["train"] if c.startswith("Case_N")}

    # N' = the first n_prime_samples variants of N'' (same files), N'' = n_double_prime_samples per normal case
    n_prime = json.loads((n_double / "n_prime.json").read_text())["training"]
    n_all = json.loads((n_double / "datalist.json").read_text())["training"]
    train_normal = [c for c in split["train"] if c.startswith("Case_N")]
    assert len(n_all) == 2 * len(train_normal) and len(n_prime) == len(train_normal)
    assert {e["image"] for e in n_prime} < {e["image"] for e in n_all}

    # the report: Tab. 2 rows per method, Tab. 1 rows per mix, each with both seeds, plots and panel
    text = report.read_text()
    for method in study.methods:
        assert f"| {method} |" in text
    summary = json.loads((report.parent / "lefusion_study.json").read_text())
    assert render_report(report.parent / "lefusion_study.json") == text  # the Markdown is its JSON, rendered
    assert set(summary["tab1_dice"]) == set(study.mixes())
    assert all(row["LV"]["n_seeds"] == 2 for row in summary["tab1_dice"].values())
    for png in ("similarity.png", "dice.png", "examples.png"):
        assert (report.parent / png).stat().st_size > 1000
    assert tree_digest(data) == before

    # resume: a finished study reruns nothing; a removed step (and only it) runs again
    logs = {p.name: p.stat().st_mtime_ns for p in (study.out / "logs").glob("*.log")}
    victim = f"segment_{slug('P+P′ LeFusion-J')}_seed1"
    (study.out / "jobs" / f"{victim}.done").unlink()
    (study.segmentation_dir("P+P′ LeFusion-J", 1) / "scores.json").unlink()
    LeFusionStudy(data, tmp_path / "study", "ci").run()
    changed = {p.name for p in (study.out / "logs").glob("*.log") if p.stat().st_mtime_ns != logs.get(p.name)}
    assert changed == {f"{victim}.log"}
    assert (study.segmentation_dir("P+P′ LeFusion-J", 1) / "scores.json").exists()


def test_seed_summary_is_the_spread_of_per_seed_case_means(tmp_path):
    """Two-stage aggregation: mean over test cases per seed, then mean ± sample std over seeds; a group filter
    keeps only its cases; undefined (null) values are left out, not counted as 0."""
    from pathosynth.studies.repeats import seed_summary

    classes = ("LV", "myocardium", "MI", "PMO")

    def scores(seed, dices):
        cases = [
            {
                "case_id": f"c{i}",
                "group": group,
                **{c: {"dice": d, "hd95": None} for c in ("LV", "myocardium", "MI", "PMO")},
            }
            for i, (group, d) in enumerate(dices)
        ]
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"cases": cases}))
        return path

    files = [scores(0, [("pathological", 0.8), ("normal", 1.0)]), scores(1, [("pathological", 0.6), ("normal", 0.0)])]
    every = seed_summary(files, "dice", classes)["MI"]
    assert every["per_seed"] == pytest.approx([0.9, 0.3]) and every["mean"] == pytest.approx(0.6)
    assert every["std"] == pytest.approx(np.std([0.9, 0.3], ddof=1))
    pathological = seed_summary(files, "dice", classes, group="pathological")["MI"]
    assert pathological["per_seed"] == pytest.approx([0.8, 0.6]) and pathological["n_seeds"] == 2
    undefined = seed_summary(files, "hd95", classes)["LV"]
    assert undefined["n_seeds"] == 0 and np.isnan(undefined["mean"])


def test_steps_start_only_after_the_steps_they_need(phantom_dir, tmp_path, monkeypatch):
    """The scheduler keeps both cores busy yet never starts a step before its inputs exist, and a failure
    stops further launches (the running step is allowed to finish).

    Ordered by events, not by sleeping: a step named in ``hold`` keeps its core until its event is set. "slow" holds
    until the step that needs only "fast" has started (a scheduler that waited for unrelated steps would time out
    and fail the order assertions); in the failure run it holds until the scheduler has taken in the failure (its
    per-step bookkeeping, the wall-time update, has run)."""
    import threading

    from pathosynth.studies.lefusion_study import StudyJob

    study = LeFusionStudy(phantom_dir, tmp_path / "study", "ci", jobs=2)
    log, lock, active = [], threading.Lock(), [0]
    started, processed, hold = {}, threading.Event(), {}

    def fake_run(job):
        with lock:
            active[0] += 1
            assert active[0] <= 2
            log.append(("start", job.name))
            started.setdefault(job.name, threading.Event()).set()
        if job.name in hold:
            assert hold[job.name]().wait(timeout=10), f"{job.name} was never released"
        with lock:
            active[0] -= 1
            log.append(("end", job.name))
        if job.name == "boom":
            raise RuntimeError("boom failed")
        return 0.0

    monkeypatch.setattr(study, "run_job", fake_run)
    hold["slow"] = lambda: started.setdefault("after_fast", threading.Event())
    jobs = [
        StudyJob("slow", "b", []),
        StudyJob("fast", "b", []),
        StudyJob("after_fast", "b", [], needs=["fast"]),
        StudyJob("after_both", "b", [], needs=["slow", "after_fast"]),
    ]
    study.run_jobs(jobs)
    position = {event: i for i, event in enumerate(log)}
    assert position[("start", "after_fast")] > position[("end", "fast")]
    assert position[("start", "after_fast")] < position[("end", "slow")]  # did not wait for the unrelated slow step
    assert position[("start", "after_both")] > max(position[("end", "slow")], position[("end", "after_fast")])

    log.clear()
    monkeypatch.setattr(study, "wall_clock", lambda: processed.set)  # called after each batch of finished steps
    hold["slow"] = lambda: processed
    with pytest.raises(RuntimeError, match="boom failed"):
        study.run_jobs([StudyJob("boom", "b", []), StudyJob("slow", "b", []), StudyJob("later", "b", [])])
    assert ("start", "later") not in log and ("end", "slow") in log
    with pytest.raises(ValueError, match="unknown steps"):
        study.run_jobs([StudyJob("orphan", "b", [], needs=["nowhere"])])


def test_wall_time_counts_each_invocation_up_to_its_last_heartbeat(phantom_dir, tmp_path, monkeypatch):
    """A study killed mid-way (no ``finally`` runs on SIGKILL) must still have recorded the time it ran: the
    record is updated after every finished step and every heartbeat while a long step runs, and each invocation
    adds its own entry."""
    import time

    from pathosynth.studies.lefusion_study import StudyJob

    study = LeFusionStudy(phantom_dir, tmp_path / "study", "ci", jobs=1)
    study.heartbeat_s = 0.05
    record = study.out / "wall_time.json"
    seen_while_running = []

    def fake_run(job):
        time.sleep(0.4)
        if job.name == "second":  # what a kill now would leave: counted past the first step, mid-way the second
            seen_while_running.append(json.loads(record.read_text()))
        time.sleep(0.1)
        return 0.5

    monkeypatch.setattr(study, "run_job", fake_run)
    study.run_jobs([StudyJob("first", "b", []), StudyJob("second", "b", [], needs=["first"])])
    (during,) = seen_while_running
    assert len(during) == 1 and during[0]["seconds"] >= 0.7
    study.run_jobs([StudyJob("again", "b", [])])
    history = json.loads(record.read_text())
    assert len(history) == 2 and history[0]["seconds"] >= 1.0 and history[1]["seconds"] >= 0.5


def test_a_resumed_step_records_the_time_of_its_killed_attempts(phantom_dir, tmp_path, monkeypatch):
    """A step that resumes from its checkpoint cost all its attempts: the time a killed attempt left in
    ``<step>.attempt.json`` (saved every heartbeat, since SIGKILL runs no cleanup) is added to the finishing one's."""
    import threading
    import time

    from pathosynth.studies.lefusion_study import StudyJob

    study = LeFusionStudy(phantom_dir, tmp_path / "study", "ci", jobs=1)
    study.heartbeat_s = 0.05
    monkeypatch.setattr(study, "command", lambda job, overlay: [sys.executable, "-c", "import time; time.sleep(1)"])
    job = StudyJob("train_x", "lesion_inpainting", [])
    attempt = study.out / "jobs" / "train_x.attempt.json"
    attempt.parent.mkdir(parents=True)
    attempt.write_text(json.dumps({"earlier_attempts_s": [30.0], "seconds": 70.0}))  # two killed attempts

    runner = threading.Thread(target=study.run_job, args=(job,))
    runner.start()
    deadline, heartbeat = time.monotonic() + 10, {}
    while time.monotonic() < deadline and len(heartbeat.get("earlier_attempts_s", [])) < 2:
        time.sleep(0.05)
        heartbeat = json.loads(attempt.read_text())
    runner.join()
    assert heartbeat["earlier_attempts_s"] == [30.0, 70.0] and heartbeat["seconds"] > 0  # what a kill now would leave
    done = json.loads((study.out / "jobs" / "train_x.done").read_text())
    assert done["attempts"] == 3 and done["seconds"] >= 101.0
    assert study.step_timings() == {"train_x": done["seconds"]} and not attempt.exists()


def test_every_step_needs_the_steps_that_write_its_inputs(phantom_dir, tmp_path):
    study = LeFusionStudy(phantom_dir, tmp_path / "study", "cpu")
    jobs = {j.name: j for j in study.training_jobs() + study.synthesis_jobs() + study.segmentation_jobs()}
    assert jobs["synth_tab2_LeFusion-S"].needs == ["train_lefusion_s_MI", "train_lefusion_s_PMO"]
    assert jobs["synth_P_prime_Hand-crafted"].needs == []
    assert set(jobs["synth_N_double_prime"].needs) == {"train_lefusion_j", "train_diffmask"}
    assert jobs[f"segment_{slug('P+P′+N″ (LeFusion-J+DiffMask)')}_seed2"].needs == [
        "synth_N_double_prime",
        "synth_P_prime_LeFusion-J",
    ]
    assert jobs["segment_P_seed0"].needs == []


def test_the_bundles_folder_is_found_from_a_non_editable_install(tmp_path, monkeypatch):
    """Studies find bundles/ through $PATHOSYNTH_BUNDLES, the source tree, or the working directory; else an error
    that says where to point (the configs are not inside an installed package)."""
    import pathosynth.studies.bundle_study as bundle_study
    from conftest import BUNDLES
    from pathosynth.errors import UserInputError

    assert bundle_study.default_bundles_dir() == BUNDLES  # editable install: the source tree
    fake_install = tmp_path / "site-packages" / "pathosynth" / "studies" / "bundle_study.py"
    monkeypatch.setattr(bundle_study, "__file__", str(fake_install))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match="PATHOSYNTH_BUNDLES"):
        bundle_study.default_bundles_dir()
    monkeypatch.setenv("PATHOSYNTH_BUNDLES", str(BUNDLES))
    assert bundle_study.default_bundles_dir() == BUNDLES
    monkeypatch.delenv("PATHOSYNTH_BUNDLES")
    monkeypatch.chdir(BUNDLES.parent)  # a non-editable install run from a checkout
    assert bundle_study.default_bundles_dir().resolve() == BUNDLES.resolve()


def test_a_failed_step_names_its_log_and_is_not_marked_done(phantom_dir, tmp_path, monkeypatch):
    """A step whose bundle run exits non-zero raises with its log's path and tail, leaves no ``.done`` (a rerun
    retries it) and keeps its time in ``<step>.attempt.json`` for the retry to add."""
    from pathosynth.studies.lefusion_study import StudyJob

    study = LeFusionStudy(phantom_dir, tmp_path / "study", "ci", jobs=1)
    command = [sys.executable, "-c", "import sys; print('bad config key'); sys.exit(3)"]
    monkeypatch.setattr(study, "command", lambda job, overlay: command)
    failed = r"study step train_x failed \(exit 3\); log .*train_x\.log(.|\n)*bad config"
    with pytest.raises(RuntimeError, match=failed):
        study.run_job(StudyJob("train_x", "lesion_inpainting", []))
    assert not (study.out / "jobs" / "train_x.done").exists()
    assert json.loads((study.out / "jobs" / "train_x.attempt.json").read_text())["earlier_attempts_s"] == []
