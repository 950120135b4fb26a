"""The run folder: the one owner of its file names, its writers and its readers.

A training run writes one folder, ``OUT/RUN_ID``; the run manager, the study, the app and the benchmarks
read it through this module only, so the on-disk format lives in one place:

- ``config.json``   every argument, package versions, git commit, device, the exact command (the training CLI);
- ``status.json``   queued / running / finished / failed / cancelled, progress, epoch, step, images/s, ETA;
- ``metrics.jsonl`` one JSON record per line: ``"kind": "step"`` every ``--log-every`` steps (loss, ce, kd, lr,
                    images/s) and ``"kind": "epoch"`` after each epoch (also train and test accuracy, test NLL,
                    ECE and Brier). Append-only: a record costs one short write, whatever the file's length, and
                    readers skip a torn last line. A resumed run first cuts the file back to the end of the record
                    of the epoch it resumes from (dropping the step records of the unfinished epoch, which it
                    trains again, and any torn line), writes one ``"kind": "resume"`` record and appends from there;
- ``launch.json``   written by the run manager: settings, command, processes, queue time, process identity;
- ``train.log``     the training process's stdout and stderr, when the run manager started it;
- ``slurm.json``    a run sent to SLURM (``explorer.training.slurm``): its job id, the options, the config it was
                    submitted with, and the last SLURM state and reason seen;
- ``events.out.tfevents.*``: the scalars of metrics.jsonl for TensorBoard (``explorer.training.events``);
- ``run.lock``      held (``flock``) by the one training process that writes the folder, for its whole life
                    (``sole_writer``); it holds that process's pid;
- ``model.safetensors`` + ``card.json``: the checkpoint of the last finished epoch (``explorer.checkpoints``),
                    so a run folder is itself a checkpoint folder;
- ``train_state.safetensors``: everything ``--resume`` needs to continue after the last finished epoch (model,
                    optimiser, scheduler, random generators, the anchor stream), tensors in safetensors and the
                    rest as JSON in its metadata, replaced atomically (``explorer.training.state``).

JSON files are replaced atomically, so a kill at any moment leaves a readable run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from explorer.checkpoints import WEIGHTS, atomic_write_text
from explorer.training.metrics_file import (
    EPOCH_METRICS,
    STEP_METRICS,
    RunFolderError,
    check_number,
    check_record,
    read_grown,
)

__all__ = ["CONFIG", "FINAL_STATES", "LATEST_TIME", "LAUNCH", "LOCK", "LOG", "METRICS", "RUN_TABLE_HEADERS", "SLURM",
           "STATUS", "TRAIN_STATE", "MetricsLog", "RunFolderBusy", "RunFolderError", "RunInfo", "check_number",
           "epoch_records", "final_epoch", "holds_training", "read_json", "read_metrics", "read_run_config",
           "read_run_info", "run_curves", "sole_writer", "update_status", "write_json", "write_status", "writer_pid"]

CONFIG, STATUS, METRICS, LAUNCH, LOG = "config.json", "status.json", "metrics.jsonl", "launch.json", "train.log"
SLURM = "slurm.json"
LOCK = "run.lock"
TRAIN_STATE = "train_state.safetensors"
FINAL_STATES = ("finished", "failed", "cancelled")
RUN_TABLE_HEADERS = ("id", "method", "dataset", "model", "status", "progress", "device", "best test acc", "started")


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically with ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """status.json: the state of the run and its progress (read by the run manager and the app)."""
    write_json(run_dir / STATUS, {"state": state, "updated": time.time(), **fields})


def update_status(run_dir: Path, state: str, message: str, keep_progress: bool = True, **fields: Any) -> None:
    """A new state for a run, written by whoever outlives its process (the manager, a start-up that failed): the
    progress fields of its status.json (epoch, step, device ...) are kept over ``fields`` unless
    ``keep_progress`` is false; its pid is dropped, since the writer is not (or no longer) the training process."""
    previous = read_json(run_dir / STATUS) if keep_progress else {}
    kept = {k: v for k, v in previous.items() if k not in ("state", "updated", "message", "pid")}
    write_status(run_dir, state, message=message, **(fields | kept))


class MetricsLog:
    """metrics.jsonl, append-only: each record is one ``write`` of one line, flushed to the OS at once.

    A reader sees every record as soon as it is written; ``sync`` (at epoch ends) also forces it to the disk.
    The file is created empty when the log opens, so a run folder always has one; ``resume_after_epoch=k`` opens
    the log of a resumed run instead: cut back to the end of epoch k's record, then appended to.
    """

    def __init__(self, run_dir: Path, resume_after_epoch: int | None = None) -> None:
        self.path = run_dir / METRICS
        if resume_after_epoch is not None:
            os.truncate(self.path, _end_of_epoch_record(self.path, resume_after_epoch))
        mode = "w" if resume_after_epoch is None else "a"
        self._file: IO[str] = open(self.path, mode, encoding="utf-8")  # noqa: SIM115 (closed by close())

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def _end_of_epoch_record(path: Path, epoch: int) -> int:
    """The byte offset just after the line of epoch ``epoch``'s record in a metrics file (ValueError: none)."""
    offset, end = 0, None
    with open(path, "rb") as f:
        for line in f:
            offset += len(line)
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and record.get("kind") == "epoch" and record.get("epoch") == epoch \
                    and line.endswith(b"\n"):
                end = offset
    if end is None:
        raise ValueError(f"{path} holds no record of epoch {epoch}, the epoch the training state was saved after")
    return end


# --------------------------------------------------------------------------------------------------
# One writer per run folder
# --------------------------------------------------------------------------------------------------
class RunFolderBusy(Exception):
    """A run folder that a fresh training run must not write: another process writes it, or it holds a trained
    run (its checkpoint or training state) that only ``--resume`` may continue. The message is one line."""


_HELD_LOCKS: set[int] = set()  # the lock files this process holds (``sole_writer``)


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close the parent's lock files, so that a worker outliving its run
    (the run ended in-process, e.g. a resume in the same Python) never keeps the folder locked. The parent's lock
    stays: a flock goes only when every copy of its file descriptor is closed."""
    for fd in _HELD_LOCKS:
        os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def holds_training(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds the result of a finished epoch (a checkpoint or a training state)."""
    return (run_dir / WEIGHTS).exists() or (run_dir / TRAIN_STATE).exists()


def writer_pid(run_dir: Path) -> int | None:
    """The pid of the process that holds ``run_dir``'s writer lock now (0 when it did not say); None when none does."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)


@contextlib.contextmanager
def sole_writer(run_dir: Path, resuming: bool, enabled: bool = True) -> Iterator[bool]:
    """Be the one writer of ``run_dir`` while the block runs: an exclusive ``flock`` on its lock file, so a second
    training process into the same folder fails at once (``RunFolderBusy``) instead of interleaving its files, and
    a fresh run (not ``resuming``) is refused a folder that holds a trained run. The lock goes with the process,
    however it ends (kill -9 too). Yields whether this call created the folder; a folder created here that holds
    only the lock file when the block ends (the run never started) is removed. ``enabled=False`` (DDP ranks
    other than 0, which write nothing) does nothing."""
    if not enabled:
        yield False
        return
    created = not run_dir.is_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, held = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
            _HELD_LOCKS.add(fd)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise RunFolderBusy(f"run {run_dir.name} is being trained by another process{f' (pid {pid})' * bool(pid)}"
                                f"; wait for it to end, or choose another --run-id") from None
        if not resuming and holds_training(run_dir):
            finished = read_json(run_dir / STATUS).get("state") == "finished"
            raise RunFolderBusy(f"run folder {run_dir} already holds a {'finished' if finished else 'trained'} run; "
                                + ("" if finished else f"continue it with --resume {run_dir}, or ")
                                + "choose another --run-id (or --out)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield created
    finally:
        if held and created and [p.name for p in run_dir.iterdir()] == [LOCK]:
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
        _HELD_LOCKS.discard(fd)
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file written atomically; {} when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


LATEST_TIME = 253402300799.0  # 9999-12-31: the last second a date can be shown for


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RunFolderError(f"{where} must be text; got {str(value)[:40]!r}")
    return value


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run folder's metrics.jsonl (any run folder, the demo checkpoints' too); [] when none.

    Lines that are not a JSON object (a torn last line while the run writes) are skipped; a record with a value of
    the wrong kind raises RunFolderError.
    """
    try:
        lines = (run_dir / METRICS).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(check_record(record, f"{METRICS} line {number}"))
    return records


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The end-of-epoch records of a run, in order; [] without a metrics.jsonl (RunFolderError: a malformed record,
    of any kind). Read as the file grows (``metrics_file.read_grown``)."""
    read = read_grown(run_dir / METRICS)
    if read is None:
        return []
    if read.error is not None:
        raise read.error
    return [dict(record) for record in read.epochs]


def final_epoch(run_dir: Path) -> dict[str, Any] | None:
    """The last epoch record of a *finished* run; None while it is unfinished, failed, missing or unreadable."""
    if read_json(run_dir / STATUS).get("state") != "finished":
        return None
    try:
        epochs = epoch_records(run_dir)
    except RunFolderError:
        return None
    return epochs[-1] if epochs else None


def run_curves(run_dir: Path) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """(method, {metric: (epochs, values)}) of a run folder, for the live training curves; no curves for a folder
    that cannot be read (its row in the runs table says why).

    Loss, CE and KD come from the step records, placed at fractional epochs (step / steps per epoch), so a
    run has a curve before its first epoch ends; accuracies and ECE come from the epoch records.
    """
    config = read_json(run_dir / CONFIG)
    method = config.get("method") if isinstance(config.get("method"), str) else "?"
    try:
        steps_per_epoch = config.get("steps_per_epoch")
        if steps_per_epoch is not None:
            steps_per_epoch = check_number(steps_per_epoch, f"{CONFIG}: steps_per_epoch", 1, whole=True)
    except RunFolderError:
        return method, {}
    read = read_grown(run_dir / METRICS)
    if read is not None and read.error is not None:
        return method, {}
    steps = read.steps if read is not None and steps_per_epoch else ()
    epochs = read.epochs if read is not None else ()
    curves = {metric: ([step[0] / steps_per_epoch for step in steps], [step[i] for step in steps])
              for i, metric in enumerate(STEP_METRICS, 1)}
    curves.update({metric: ([r["epoch"] for r in epochs], [r.get(metric) for r in epochs]) for metric in EPOCH_METRICS})
    return method, curves


@dataclass(frozen=True)
class RunInfo:
    """One run as the runs table shows it, read from its folder."""

    run_id: str
    method: str
    dataset: str
    model: str
    state: str  # queued, running, finished, failed or cancelled
    message: str  # what the run is doing, or why it failed
    progress: float  # 0..1 of all optimiser steps
    epoch: int
    epochs: int
    device: str  # the device training reported, or the one asked for while queued
    processes: int  # > 1: DistributedDataParallel over this many GPUs
    gpus: tuple[int, ...]  # the GPUs the manager gave it (indices among the app's visible GPUs)
    best_test_accuracy: float | None
    images_per_s: float | None
    eta_s: float | None
    started: float  # when it was launched (seconds since the epoch)
    path: Path

    def row(self) -> list[str]:
        """The run as one row of text under ``RUN_TABLE_HEADERS``."""
        device = self.device + (f" on GPU {','.join(map(str, self.gpus))}" if self.gpus else "")
        accuracy = "" if self.best_test_accuracy is None else f"{100 * self.best_test_accuracy:.1f} %"
        progress = f"{100 * self.progress:.0f} % (epoch {self.epoch}/{self.epochs})"
        return [self.run_id, self.method, self.dataset, self.model, self.state, progress, device, accuracy,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))]


def read_run_config(run_dir: Path, launch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's settings: its config.json (written by the training process, with what it resolved), or while the
    run has not started yet, the config its launch record queued (``launch``: that record, when already read) or
    the one it was submitted to SLURM with."""
    return (read_json(run_dir / CONFIG) or (read_json(run_dir / LAUNCH) if launch is None else launch).get("config")
            or read_json(run_dir / SLURM).get("config", {}))


def read_run_info(run_dir: Path) -> RunInfo:
    """What the runs table shows of one run folder (its status, launch record, config and epoch records), every
    value checked. A folder holding a value of the wrong kind (a hand-edited or foreign status.json, an epoch record
    without its numbers, a date beyond 9999) is a row of state "unreadable" whose message says why: one malformed
    folder must not break the runs table for everybody."""
    try:
        return _checked_run_info(run_dir)
    except (RunFolderError, OSError) as exc:
        return RunInfo(run_id=run_dir.name, method="?", dataset="?", model="?", state="unreadable",
                       message=f"unreadable: {exc}"[:300], progress=0.0, epoch=0, epochs=0, device="?", processes=1,
                       gpus=(), best_test_accuracy=None, images_per_s=None, eta_s=None,
                       started=run_dir.stat().st_mtime, path=run_dir)


def _checked_run_info(run_dir: Path) -> RunInfo:
    status, launch = read_json(run_dir / STATUS), read_json(run_dir / LAUNCH)
    config = read_run_config(run_dir, launch) or {}
    process = launch.get("process") or {}
    if not isinstance(config, dict) or not isinstance(process, dict):
        raise RunFolderError(f"{LAUNCH}: config and process must be objects")
    if config.get("steps_per_epoch") is not None:  # the live curves place the step records with it
        check_number(config["steps_per_epoch"], f"{CONFIG}: steps_per_epoch", 1, whole=True)
    tests = [r["test_accuracy"] for r in epoch_records(run_dir) if r.get("test_accuracy") is not None]
    started = launch.get("queued_at") or (run_dir / STATUS).stat().st_ctime
    optional = {name: None if status.get(name) is None else check_number(status[name], f"{STATUS}: {name}")
                for name in ("images_per_s", "eta_s")}
    gpus = process.get("gpus") or []
    return RunInfo(
        run_id=run_dir.name, **{name: _text(config.get(name, "?"), f"{CONFIG}: {name}")
                                for name in ("method", "dataset", "model")},
        state=_text(status.get("state", "unknown"), f"{STATUS}: state"),
        message=_text(status.get("message", ""), f"{STATUS}: message"),
        progress=check_number(status.get("progress") or 0.0, f"{STATUS}: progress", high=1.0),
        epoch=check_number(status.get("epoch") or 0, f"{STATUS}: epoch", whole=True),
        epochs=check_number(status.get("epochs") or config.get("epochs", 0), f"{STATUS}: epochs", whole=True),
        device=_text(status.get("device") or config.get("device", "?"), f"{STATUS}: device"),
        processes=check_number(launch.get("processes", 1), f"{LAUNCH}: processes", 1, whole=True),
        gpus=tuple(check_number(g, f"{LAUNCH}: process gpus", whole=True) for g in (gpus if isinstance(gpus, list) else
                                                                             [gpus])),
        best_test_accuracy=max(tests) if tests else None, **optional,
        started=check_number(started, f"{LAUNCH}: queued_at", high=LATEST_TIME), path=run_dir)
