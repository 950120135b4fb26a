"""The background run manager: training runs as separate processes, queued, watched, cancelled, deleted.

The app never trains in its own process: a crash or an out-of-memory in training cannot take it down. A run
is the training CLI started in a process group of its own (``start_new_session``)::

    python -m explorer.train --out RUNS_DIR --run-id RUN_ID ...                 # one process
    python -m torch.distributed.run --standalone --nproc_per_node N -m explorer.train ...   # N GPUs, DDP

Its run folder ``RUNS_DIR/RUN_ID`` is the single source of truth, so runs survive an app restart:

- ``status.json``, ``config.json``, ``metrics.jsonl``, the checkpoint: written by the training CLI
  (``explorer.train``); the manager itself writes ``status.json`` only for a run that has no process to do it
  (``queued``, a run that never started, a process that died before it could write its final state);
- ``launch.json``: written by the manager: the settings, the exact command, the number of processes, when it
  was queued, and the identity (pid + start time) of the process group leader and of the manager;
- ``train.log``: everything the training process prints, stdout and stderr together.

``resume`` continues a cancelled, failed or interrupted run in its own folder (``explorer.train --resume``): it
is queued like a launch, keeps its launch record (with ``resumed_at`` added) and appends to its log.

Run ids are generated here (time, method, random suffix) unless the caller names the run (a study names its
runs after itself); every id, given or coming back from the UI, is checked to be a plain folder name, so no
path can leave the runs folder. Symbolic links are not followed (as in the checkpoint pickers): a linked run
folder is not listed, reconciled, resumed or deleted; naming it gets a ``RunError`` that says so.

A concurrency limit counts processes (one per GPU a run uses); further launches wait in order, as
``queued``. On a GPU host each run sees only the GPUs it was given (``CUDA_VISIBLE_DEVICES``), the least
busy first, so two runs do not pile onto GPU 0. The queue is advanced by a small daemon thread that looks
every ``POLL_S`` seconds, rather than on the UI's calls: a queued run must start, a cancelled run must be
killed when its grace period ends and an ended child must be reaped even while no browser is open (Gradio's
timer only ticks while a page is open). Each look polls the children (a run adopted from an earlier app: its
/proc entry) and reads no run file unless a run ended, so the thread costs nothing worth measuring. A launch
with a free slot starts at once, so the UI never waits for a tick.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from explorer.training import slurm
from explorer.training.command import FORM_FIELDS, resume_command, training_command
from explorer.training.config import RUN_ID_PATTERN, ConfigError, TrainConfig, check_resumable
from explorer.training.processes import TRAINING_ENTRY_POINTS, ProcessGroup, process_identity, training_process_alive
from explorer.training.run_checks import LaunchChecks, RunError
from explorer.training.run_processes import POLL_S, ProcessSlots
from explorer.training.runfolder import (
    FINAL_STATES,
    LAUNCH,
    LOG,
    STATUS,
    RunInfo,
    read_json,
    read_metrics,
    read_run_config,
    read_run_info,
    update_status,
    write_json,
    write_status,
    writer_pid,
)

__all__ = ["POLL_S", "RunError", "RunManager"]

_log = logging.getLogger(__name__)
GRACE_S = 10.0


def _live_owner(status: dict[str, Any], launch: dict[str, Any]) -> ProcessGroup | bool | None:
    """Who still owns a run left queued or running: its live process group leader (to adopt), True when
    something else alive owns it (a CLI process, the manager that queued it), None when its owner is gone."""
    if status["state"] == "running" and "process" in launch:  # started by a manager
        process = ProcessGroup(launch["process"]["pid"], launch["process"]["start"], int(launch["processes"]),
                           list(launch["process"].get("gpus", [])))
        return process if process.alive() else None
    if status["state"] == "running":  # started by the CLI: status.json has its pid and start time
        return True if training_process_alive(status) else None
    manager = launch.get("manager") or {}  # queued: the manager that queued it starts it, while it lives
    identity = process_identity(manager.get("pid"))
    return True if identity is not None and identity[0] == manager.get("start") else None


def _interrupted_message(status: dict[str, Any]) -> str:
    """Why a run left queued or running has no owner: its process is gone, or its pid names another process."""
    pid = status.get("pid")
    if status["state"] == "running" and process_identity(pid) is not None:
        return (f"interrupted: its process ended without a final state; its pid {pid} now belongs to another "
                f"process (the OS reused it)")
    return "interrupted: its process ended without a final state (the app or the machine stopped)"


# --------------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------------
def _queue_resumed(run_dir: Path) -> None:
    """A resumed run's status: queued, its progress that of its last finished epoch, where it continues (the steps
    after it are trained again), so the progress shown does not drop again once training reports."""
    status = read_json(run_dir / STATUS)
    epoch, epochs, total = (status.get(key) for key in ("epoch", "epochs", "total_steps"))
    if not (isinstance(epoch, int) and isinstance(epochs, int) and epochs > 0):
        update_status(run_dir, "queued", "waiting for a free slot to resume")
        return
    kept = {k: v for k, v in status.items() if k not in ("state", "updated", "message", "pid")}
    write_status(run_dir, "queued", **{**kept, "message": f"waiting for a free slot to resume after epoch {epoch}",
                                       "progress": epoch / epochs, **({"step": total * epoch // epochs} if total
                                                                       else {})})


class RunManager(LaunchChecks, ProcessSlots):
    """Launch, queue, watch, cancel and delete training runs under ``runs_dir``.

    ``max_concurrent``: training processes at once (default: one per visible GPU, one on a CPU-only host).
    ``grace_s``: how long a cancelled run may take to stop after SIGTERM before it is killed.
    ``max_queued``: runs that may wait for a slot at once (default: no limit); a further launch is refused. A
    study's runs are not counted: the study queues all of them at once by design; ``max_queued_studies`` bounds
    instead how many studies may have runs waiting at once (default: no limit), so launching studies cannot queue
    runs without end.
    On creation the manager reconciles the runs folder (``reconcile``) and starts its watcher thread. Its refusals
    name the runs folder by its name (``runs``), not by its path: the web app shows them to every visitor.
    """

    def __init__(self, runs_dir: Path | str = "runs", max_concurrent: int | None = None,
                 grace_s: float = GRACE_S, max_queued: int | None = None,
                 max_queued_studies: int | None = None,
                 slurm_options: slurm.SlurmOptions | None = None) -> None:
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.slurm = slurm_options  # given: launches may go to SLURM (executor "slurm")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_concurrent = max(1, torch.cuda.device_count()) if max_concurrent is None else max_concurrent
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1; got {max_concurrent}")
        for name, limit in (("max_queued", max_queued), ("max_queued_studies", max_queued_studies)):
            if limit is not None and limit < 0:
                raise ValueError(f"{name} must be at least 0; got {limit}")
        self.max_queued, self.max_queued_studies = max_queued, max_queued_studies
        self.grace_s = grace_s
        self._lock = threading.RLock()
        self._queue: dict[str, dict[str, Any]] = {}  # run id -> its launch.json record, in launch order
        self._active: dict[str, ProcessGroup] = {}
        self._cancel_deadlines: dict[str, float] = {}  # run id -> time.monotonic() at which SIGKILL follows
        self._slurm_runs: set[str] = set()  # SLURM jobs submitted or found here that had not ended when last seen
        self._identity = process_identity(os.getpid())
        self.reconcile()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="run-manager", daemon=True)
        self._watcher.start()

    # ---- the public API ---------------------------------------------------------------------------
    def launch(self, settings: Mapping[str, Any], gpus: int = 1, run_id: str | None = None,
               study: str | None = None, executor: str = "local") -> str:
        """Check the form values, create the run folder as ``queued`` and start the run when a slot is free.

        ``settings`` maps ``FORM_FIELDS`` names to values (missing ones take the CLI defaults); ``gpus`` > 1
        trains with DistributedDataParallel under torchrun on that many GPUs. ``run_id`` names the run folder
        instead of a generated id (a study's runs are named after the study); it must be a plain folder name
        that does not exist yet. ``study`` (a study id) is recorded in launch.json. ``executor="slurm"`` submits
        the run as a SLURM job with the manager's ``slurm_options`` instead (``gpus`` processes, one per GPU).
        Returns the run id; any value that cannot work raises ``RunError`` with a message for the user, before
        anything is written.
        """
        if executor not in ("local", "slurm") or (executor == "slurm" and self.slurm is None):
            offered = "local or slurm" if self.slurm else "local (start it with --executor slurm to add slurm)"
            raise RunError(f"executor {executor!r} is not available here; this app trains with {offered}")
        if run_id is not None and (not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id):
            raise RunError(f"{run_id!r} is not a run id (letters, digits, '.', '_' and '-' only; no '..' or '/')")
        cfg = self._checked_config(settings, gpus)
        if executor == "slurm":
            with self._lock:
                run_id, _ = self._claim_run_folder(run_id, cfg.method, study)
                return self._submit(replace(cfg, out=str(self.runs_dir), run_id=run_id), gpus, study)

        def command(new_id: str) -> tuple[list[str], dict[str, Any]]:
            config = replace(cfg, out=str(self.runs_dir), run_id=new_id)
            return training_command(config, gpus), asdict(config)

        return self.launch_command(cfg.method, command, cfg.epochs, cfg.device, gpus, run_id, study)

    def launch_command(self, label: str, command: Callable[[str], tuple[list[str], dict[str, Any]]], epochs: int,
                       device: str, processes: int = 1, run_id: str | None = None, study: str | None = None) -> str:
        """Create the run folder as ``queued`` and start the run when ``processes`` slots are free: ``launch`` after
        its checks, and the other training CLIs (``explorer.transfer``), which check their own settings.

        ``command(run_id)`` gives the run's command line and its config (recorded in launch.json) once the id is
        known; ``label`` goes into a generated id. Returns the run id."""
        if run_id is not None and (not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id):
            raise RunError(f"{run_id!r} is not a run id (letters, digits, '.', '_' and '-' only; no '..' or '/')")
        with self._lock:
            run_id, run_dir = self._claim_run_folder(run_id, label, study)
            argv, config = command(run_id)
            manager = {"pid": os.getpid(), "start": self._identity[0] if self._identity else None}
            launch = {"run_id": run_id, "config": config, "processes": processes, "command": argv,
                      "queued_at": time.time(), "manager": manager, **({"study": study} if study else {})}
            write_json(run_dir / LAUNCH, launch)
            write_status(run_dir, "queued", message="waiting for a free slot", progress=0.0, step=0, epoch=0,
                         epochs=epochs, device=device)
            self._queue[run_id] = launch
            self._advance()
        return run_id

    def _claim_run_folder(self, run_id: str | None, label: str, study: str | None) -> tuple[str, Path]:
        """A new run folder (named ``run_id``, or a generated id with ``label``), unless the queue is full; called
        with the lock held."""
        self._check_queue_room(study)
        if run_id is None:
            return self._new_run_folder(label)
        run_dir = self.runs_dir / run_id
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise RunError(f"run {run_id} already exists in {self.runs_dir.name}; choose another id") from None
        return run_id, run_dir

    def resume(self, run_id: str) -> None:
        """Queue a cancelled, failed or interrupted run to continue from its last finished epoch, in its own folder
        and on as many processes as before. A queued, running or finished run, or one without a training state
        (it stopped before its first epoch ended), is refused with ``RunError``."""
        run_dir = self.run_dir(run_id)
        with self._lock:
            state = read_json(run_dir / STATUS).get("state", "unknown")
            if state in ("queued", "running"):
                raise RunError(f"run {run_id} is {state}; only a cancelled, failed or interrupted run can be resumed")
            try:
                config = check_resumable(run_dir, where=f"run {run_id}")
            except ConfigError as exc:
                raise RunError(str(exc)) from None
            if run_id in self._active or run_id in self._queue:
                raise RunError(f"run {run_id} is {state}, but its process is still ending; resume it in a moment")
            launch = read_json(run_dir / LAUNCH) or {"run_id": run_id, "processes": 1, "queued_at": time.time(),
                                                     "config": config}
            processes = int(launch.get("processes", 1))
            if processes > self.max_concurrent:
                raise RunError(f"run {run_id} trained on {processes} GPUs; this app runs at most "
                               f"{self.max_concurrent} training processes at once")
            entry = config.get("cli", "explorer.train")  # the training CLI that wrote the run (explorer.transfer)
            if entry not in TRAINING_ENTRY_POINTS:
                raise RunError(f"run {run_id} names {entry!r} as its command; it cannot be resumed here")
            command = resume_command(run_dir, processes, module=entry)
            launch.pop("process", None)
            launch.update(command=command, resumed_at=time.time(),
                          manager={"pid": os.getpid(), "start": self._identity[0] if self._identity else None})
            write_json(run_dir / LAUNCH, launch)
            _queue_resumed(run_dir)
            self._queue[run_id] = launch
            self._advance()

    def runs(self) -> list[RunInfo]:
        """Every run under the runs folder, newest first (runs of earlier app sessions and of the CLI too); the
        runs sent to SLURM are first brought up to date with SLURM's word on their jobs."""
        folders = [path for path in self.runs_dir.iterdir() if not path.is_symlink() and (path / STATUS).is_file()]
        self.refresh_slurm(folders)
        infos = [read_run_info(path) for path in folders]
        return sorted(infos, key=lambda info: (info.started, info.run_id), reverse=True)

    def info(self, run_id: str) -> RunInfo:
        """The state, progress and best test accuracy of one run."""
        return read_run_info(self.run_dir(run_id))

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """The records of metrics.jsonl so far, for live curves: ``kind`` "step" (loss, ce, kd, lr) every few
        steps and ``kind`` "epoch" (also train/test accuracy, test NLL, ECE, Brier) after each epoch."""
        return read_metrics(self.run_dir(run_id))

    def log_tail(self, run_id: str, lines: int = 40) -> str:
        """The last ``lines`` lines of the run's log (its stdout and stderr), e.g. to show why it failed."""
        try:
            with open(self.run_dir(run_id) / LOG, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def settings(self, run_id: str) -> dict[str, Any]:
        """The form values a run was launched with, e.g. to launch the same settings with another method."""
        run_dir = self.run_dir(run_id)
        config = read_run_config(run_dir)
        return {name: config[name] for name in FORM_FIELDS if name in config}

    def cancel(self, run_id: str) -> None:
        """Stop a run. A queued run is cancelled at once; a running one gets SIGTERM on its process group (it
        stops at the next step, keeping the checkpoint of its last finished epoch) and SIGKILL when it has
        not ended ``grace_s`` seconds later. Either way it ends ``cancelled``."""
        run_dir = self.run_dir(run_id)
        with self._lock:
            if run_id in self._queue:
                del self._queue[run_id]
                update_status(run_dir, "cancelled", "cancelled before it started")
                return
            process = self._active.get(run_id)
            if process is None:
                state = read_json(run_dir / STATUS).get("state", "unknown")
                if state in ("queued", "running") and slurm.job_record(run_dir):
                    try:
                        slurm.cancel(run_dir)
                    except slurm.SlurmError as exc:
                        raise RunError(str(exc)) from None
                    return
                if state in ("queued", "running"):
                    raise RunError(f"run {run_id} was not started by this app (e.g. from the command line); "
                                   f"stop it where it was started")
                raise RunError(f"run {run_id} is {state}; there is nothing to cancel")
            if run_id not in self._cancel_deadlines:
                self._cancel_deadlines[run_id] = time.monotonic() + self.grace_s
                process.signal_group(signal.SIGTERM)

    def delete(self, run_id: str) -> None:
        """Remove the folder of a finished, failed or cancelled run (the UI asks for confirmation first).

        A run whose process wrote its final state but has not exited yet (it is still closing its files) is
        refused too: removing the folder under it would fail it or leave half a folder."""
        run_dir = self.run_dir(run_id)
        with self._lock:
            status = read_json(run_dir / STATUS)
            state = status.get("state", "unknown")
            if state not in FINAL_STATES:
                raise RunError(f"run {run_id} is {state}; only finished, failed or cancelled runs can be deleted "
                               f"(cancel it first)")
            if run_id in self._active or run_id in self._queue:  # e.g. a start-up failure, still exiting
                raise RunError(f"run {run_id} is {state}, but its process has not ended yet; try again in a moment")
            writer = writer_pid(run_dir)  # a training process holds the folder: it may not have written its pid
            if training_process_alive(status) or writer is not None:
                raise RunError(f"run {run_id} is {state}, but its process (pid {writer or status.get('pid')}) has not "
                               f"exited yet; try again in a moment")
            shutil.rmtree(run_dir)

    def run_dir(self, run_id: str) -> Path:
        """The folder of run ``run_id``. Anything but the plain name of a run folder under the runs folder
        (a path, ``..``, an unknown id) is refused with ``RunError``."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
            raise RunError(f"{run_id!r} is not a run id (letters, digits, '.', '_' and '-' only; no '..' or '/')")
        run_dir = self.runs_dir / run_id
        if run_dir.is_symlink():
            raise RunError(f"run {run_id} is a symbolic link in {self.runs_dir.name}; the app does not follow links "
                           f"to run folders (remove the link by hand, or move the folder itself there)")
        if not (run_dir / STATUS).is_file():
            raise RunError(f"there is no run {run_id} in {self.runs_dir.name}")
        return run_dir

    def has_active_runs(self) -> bool:
        """True while a run of this manager is queued or running, or a SLURM job of its runs folder had not ended
        when last seen (the UI refreshes only then)."""
        with self._lock:
            return bool(self._queue or self._active or self._slurm_runs)

    def refresh_slurm(self, folders: list[Path] | None = None) -> dict[str, slurm.JobState]:
        """SLURM's state of the jobs of these run folders (default: those not ended when last seen), settling the
        runs whose jobs SLURM ended (``slurm.refresh``); by run id."""
        if folders is None:
            folders = [self.runs_dir / run_id for run_id in self._slurm_runs]
        try:
            states = slurm.refresh(folders)
        except slurm.SlurmError as exc:  # SLURM unreachable for a moment: the runs keep their last known state
            _log.warning("could not ask SLURM about its jobs: %s", exc)
            return {}
        with self._lock:
            self._slurm_runs |= {run_id for run_id, job in states.items() if not job.ended}
            self._slurm_runs -= {run_id for run_id, job in states.items() if job.ended}
        return states

    def _submit(self, cfg: TrainConfig, gpus: int, study: str | None) -> str:
        """Send a run whose folder exists to SLURM; returns its run id (RunError when SLURM refuses it)."""
        options = self.slurm if gpus <= 1 else replace(self.slurm, gpus_per_run=gpus, tasks_per_node=gpus)
        run_dir = self.runs_dir / cfg.run_id
        write_json(run_dir / LAUNCH, {"run_id": cfg.run_id, "config": asdict(cfg), "processes": gpus,
                                      "executor": "slurm", "queued_at": time.time(),
                                      **({"study": study} if study else {})})
        try:
            slurm.submit([cfg], options)
        except slurm.SlurmError as exc:
            raise RunError(str(exc)) from None
        self._slurm_runs.add(cfg.run_id)
        return cfg.run_id

    def reconcile(self) -> list[str]:
        """Mark runs left ``queued`` or ``running`` whose process is gone as ``failed`` ("interrupted").

        A running run whose process group leader is still alive (same pid *and* start time, so a reused pid
        does not count) is adopted: it takes its slots, can be cancelled and is watched until it ends. A run
        queued by another manager that is still alive is left to it. Returns the ids marked failed.
        """
        interrupted = []
        with self._lock:
            for run_dir in sorted(self.runs_dir.iterdir()):
                if run_dir.is_symlink():
                    continue
                run_id, status = run_dir.name, read_json(run_dir / STATUS)
                if status.get("state") not in ("queued", "running") or run_id in self._queue or run_id in self._active:
                    continue
                if slurm.job_record(run_dir):  # a SLURM job: SLURM owns it (``runs`` asks SLURM about it)
                    self._slurm_runs.add(run_id)
                    continue
                try:
                    owner = _live_owner(status, read_json(run_dir / LAUNCH))
                except (KeyError, TypeError, ValueError):  # a hand-edited launch.json: nobody to wait for
                    owner = None
                if isinstance(owner, ProcessGroup):
                    self._active[run_id] = owner
                elif owner is None:
                    update_status(run_dir, "failed", _interrupted_message(status))
                    interrupted.append(run_id)
        return interrupted

    def close(self) -> None:
        """Stop watching. Running trainings go on (the next manager adopts them); queued runs end ``failed``
        ("interrupted"), as nobody is left to start them."""
        self._stop.set()
        self._watcher.join()
        with self._lock:
            for run_id in self._queue:
                update_status(self.runs_dir / run_id, "failed", "interrupted: the app stopped before it started")
            self._queue.clear()


    def _new_run_folder(self, label: str) -> tuple[str, Path]:
        while True:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(3)}"
            try:
                (self.runs_dir / run_id).mkdir()
                return run_id, self.runs_dir / run_id
            except FileExistsError:
                continue


