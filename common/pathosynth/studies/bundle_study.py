"""A study as a plan of bundle workflow runs: resumable, dependency-scheduled, logged.

A study (:class:`LeFusionStudy`, :class:`FqcdmStudy`) is a list of :class:`StudyJob` — each one bundle workflow
run exactly as a user would run it (``python -m monai.bundle run`` with the bundle's configs plus one overlay of
study settings, kept in ``OUT/jobs/<step>.json``), logged to ``OUT/logs/<step>.log``. A step that finished leaves
``OUT/jobs/<step>.done``; rerunning skips those and resumes the interrupted one (the bundles resume training from
their last epoch and synthesis from their last case). Steps run ``jobs`` at a time, each as soon as the steps
whose outputs it reads have finished, so no core idles while one slow training holds back a whole phase.

Scales are JSON files in the bundle's ``configs/study/`` folder (``cpu``: one to a few hours on 2 cores, measured and
stated in its description; ``ci``: the test suite's; ``paper``: the paper's settings for a GPU); a section of a scale
file is one bundle's settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle_configs import config_files
from ..io.atomic import write_json

logger = logging.getLogger(__name__)

__all__ = ["BundleStudy", "StudyJob", "default_bundles_dir", "slug"]


BUNDLES_ENV = "PATHOSYNTH_BUNDLES"


def default_bundles_dir() -> Path:
    """The ``bundles/`` folder the studies run: ``$PATHOSYNTH_BUNDLES`` when set, else that of the source tree this
    package is installed from (an editable install, ``pip install -e .``), else ``./bundles`` (a non-editable install
    run from a checkout). The configs are not part of the installed package, so without any of these the error says
    where to point."""
    candidates = [Path(os.environ[BUNDLES_ENV])] if os.environ.get(BUNDLES_ENV) else []
    candidates += [Path(__file__).resolve().parents[3] / "bundles", Path.cwd() / "bundles"]
    for folder in candidates:
        if (folder / "lesion_inpainting" / "configs").is_dir():
            return folder
    from ..errors import UserInputError

    raise UserInputError(
        f"no bundles folder found (looked in {', '.join(str(c) for c in candidates)}); run from a checkout of "
        f"pathosynth or set {BUNDLES_ENV} to its bundles/ folder"
    )


def slug(name: str) -> str:
    """A folder name for a method or training mix ("P+P′ LeFusion-J" -> "P+Pp_LeFusion-J")."""
    return re.sub(r"[^A-Za-z0-9+_-]+", "_", name.replace("″", "pp").replace("′", "p")).strip("_")


@dataclass
class StudyJob:
    """One bundle workflow run of a study; ``settings`` become a JSON overlay after the bundle's configs."""

    name: str
    bundle: str
    configs: list[str]
    settings: dict = field(default_factory=dict)
    workflow: str = "run"
    needs: list[str] = field(default_factory=list)  # names of the jobs whose outputs this one reads
    finish: Callable[[], None] | None = None  # run after the job (also when it had finished before)


class BundleStudy:
    """Scale loading, input checks and the scheduler shared by the studies.

    Args:
        dataset_dir: the real dataset (only read).
        out_dir: the study folder (everything is written here).
        scale: a scale name of ``bundles/<scale_bundle>/configs/study/`` or the path of a scale JSON.
        jobs: bundle runs at a time (each gets ``cores // jobs`` threads); default from the scale file.
    """

    scale_bundle = ""  # the bundle whose configs/study/ holds the named scales
    heartbeat_s = 60.0  # how often the time of running steps is saved (what a killed study has recorded of them)

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        scale: str = "cpu",
        jobs: int | None = None,
        bundles_dir: str | os.PathLike | None = None,
    ) -> None:
        self.dataset_dir = Path(dataset_dir).resolve()
        self.out = Path(out_dir).resolve()
        self.bundles = Path(bundles_dir or default_bundles_dir()).resolve()
        scale_path = (
            Path(scale)
            if str(scale).endswith(".json")
            else self.bundles / self.scale_bundle / "configs" / "study" / f"{scale}.json"
        )
        if not scale_path.is_file():
            raise FileNotFoundError(f"study scale {scale!r}: {scale_path} does not exist")
        self.scale_path = scale_path.resolve()
        self.scale = json.loads(scale_path.read_text())
        self.jobs = int(jobs or self.scale.get("jobs", 1))
        if self.out == self.dataset_dir or self.out.is_relative_to(self.dataset_dir):
            raise ValueError(
                f"study output {self.out} lies inside the dataset {self.dataset_dir}; the dataset is only read"
            )

    def scale_names(self, key: str, known) -> list:
        """The scale's list ``key`` (default: all of ``known``), refused naming the scale file when it holds a name
        outside ``known`` -- before any step runs."""
        names = list(self.scale.get(key, known))
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"study scale {self.scale_path}: unknown {key} {unknown}; known: {list(known)}")
        return names

    def write_case_split(self) -> dict[str, str]:
        """``OUT/split/``: the dataset split by case with the scale's ``test_fraction`` (0.25) and ``split_seed`` (0),
        so the studies of one dataset hold out the same cases; returns name -> datalist path."""
        from ..data.splits import write_split

        self.out.mkdir(parents=True, exist_ok=True)
        return write_split(
            self.dataset_dir,
            self.out / "split",
            float(self.scale.get("test_fraction", 0.25)),
            int(self.scale.get("split_seed", 0)),
        )

    def split_path(self, name: str) -> str:
        return str(self.out / "split" / f"{name}.json")

    def section(self, name: str) -> tuple[list[str], dict]:
        """(extra bundle config files, settings) of a scale section; ``"overlays"`` names files of the bundle
        (e.g. its smoke.json), everything else is a config key."""
        settings = dict(self.scale.get(name, {}))
        return list(settings.pop("overlays", [])), settings

    @property
    def threads_per_job(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def command(self, job: StudyJob, overlay: Path) -> list[str]:
        configs = self.bundles / job.bundle / "configs"
        files = [str(f) for f in config_files(configs, [*job.configs, overlay])]
        return [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            job.workflow,
            "--config_file",
            json.dumps(files),
            "--meta_file",
            str(configs / "metadata.json"),
            "--logging_file",
            str(configs / "logging.conf"),
        ]

    def run_job(self, job: StudyJob) -> float:
        """Run one step unless it finished before; returns its wall time (0 when skipped).

        A step's recorded time is what all its attempts cost: a resumed step continues from its last checkpoint, so
        the time of the attempts that were killed (no ``finally`` runs on SIGKILL or a lost session) is part of it.
        ``OUT/jobs/<step>.attempt.json`` is rewritten every ``heartbeat_s`` while the step runs; the next attempt
        finds what a killed one left there and adds it."""
        done = self.out / "jobs" / f"{job.name}.done"
        if done.exists():
            if job.finish:
                job.finish()
            return 0.0
        overlay = self.out / "jobs" / f"{job.name}.json"
        write_json(overlay, job.settings)
        command = self.command(job, overlay)
        attempt = self.out / "jobs" / f"{job.name}.attempt.json"
        earlier = []
        if attempt.exists():
            left = json.loads(attempt.read_text())
            earlier = [*left["earlier_attempts_s"], left["seconds"]]
        log = self.out / "logs" / f"{job.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        threads = str(self.threads_per_job)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        start = time.monotonic()

        def save_attempt() -> float:
            seconds = time.monotonic() - start
            write_json(attempt, {"earlier_attempts_s": earlier, "seconds": round(seconds, 1)})
            return seconds

        with open(log, "w") as handle:
            handle.write(" ".join(command) + "\n\n")
            handle.flush()
            process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=self.bundles / job.bundle
            )
            while True:
                try:
                    returncode = process.wait(timeout=self.heartbeat_s)
                    break
                except subprocess.TimeoutExpired:
                    save_attempt()
        seconds = time.monotonic() - start
        if returncode != 0:
            save_attempt()
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"study step {job.name} failed (exit {returncode}); log {log}:\n{tail}")
        if job.finish:
            job.finish()
        total = sum(earlier) + seconds
        record = {"command": command, "seconds": round(total, 1), "attempts": len(earlier) + 1, "threads": int(threads)}
        write_json(done, record)
        attempt.unlink(missing_ok=True)
        logger.info(
            f"{job.name}: {seconds:.0f} s" + (f" ({total:.0f} s over {len(earlier) + 1} attempts)" if earlier else "")
        )
        return seconds

    def run_jobs(self, jobs: Sequence[StudyJob]) -> None:
        """Run ``jobs`` ``self.jobs`` at a time, each as soon as the jobs it needs have finished (in list order
        among the ready ones). The first failure stops new launches; the running ones finish, then it is raised."""
        pending, finished, running = list(jobs), set(), {}
        known = {job.name for job in jobs}
        for job in jobs:
            unknown = [n for n in job.needs if n not in known]
            if unknown:
                raise ValueError(f"study step {job.name} needs unknown steps {unknown}")
        update_wall_time = self.wall_clock()
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            failure = None
            while (pending and failure is None) or running:
                while failure is None and len(running) < self.jobs:
                    ready = next((job for job in pending if set(job.needs) <= finished), None)
                    if ready is None:
                        break
                    pending.remove(ready)
                    running[pool.submit(self.run_job, ready)] = ready.name
                if not running:
                    raise RuntimeError(f"study steps {[j.name for j in pending]} wait for steps that cannot run")
                done, _ = wait(running, timeout=self.heartbeat_s, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    if future.exception() is not None:
                        failure = failure or future.exception()
                    else:
                        finished.add(name)
                update_wall_time()
            if failure is not None:
                raise failure

    def wall_clock(self) -> Callable[[], None]:
        """Append this invocation to ``OUT/wall_time.json`` and return the function that updates its seconds.
        The scheduler calls it after every finished step and every ``heartbeat_s`` rather than once at the end,
        because a killed study (SIGKILL, a lost session) runs no ``finally``: it then still counts up to its last
        heartbeat."""
        record = self.out / "wall_time.json"
        history = json.loads(record.read_text()) if record.exists() else []
        start = time.monotonic()
        entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": 0.0, "jobs": self.jobs}

        def update() -> None:
            entry["seconds"] = round(time.monotonic() - start, 1)
            write_json(record, [*history, entry])

        update()
        return update

    def step_timings(self) -> dict[str, float]:
        """Step name -> wall seconds of every finished step, all its attempts together (see :meth:`run_job`)."""
        return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((self.out / "jobs").glob("*.done"))}

    # ---- report records shared by the studies -------------------------------------------------------
    def provenance(self, command: str) -> dict:
        """What the report's opening states (:func:`.results_markdown.provenance_markdown`): the study command, the
        scale and its description, the code's git commit."""
        from .results_markdown import code_commit

        return {
            "command": command,
            "scale": self.scale_path.stem,
            "description": self.scale.get("description", ""),
            "code": code_commit(),
        }

    def wall_time(self, phases: Sequence[tuple[str, str]], details: str) -> dict:
        """Per phase (name, step-name prefix) the number of finished steps and their summed seconds, the study's
        invocations (``OUT/wall_time.json``) and how steps ran; ``details`` names the file with per-step times."""
        timings = self.step_timings()
        rows = []
        for phase, prefix in phases:
            times = [t for name, t in timings.items() if name.startswith(prefix)]
            rows.append({"phase": phase, "steps": len(times), "seconds": sum(times)})
        record = self.out / "wall_time.json"
        return {
            "phases": rows,
            "invocations": json.loads(record.read_text()) if record.exists() else [],
            "jobs": self.jobs,
            "threads_per_job": self.threads_per_job,
            "cpu_count": os.cpu_count(),
            "details": details,
        }
