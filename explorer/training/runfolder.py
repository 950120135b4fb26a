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
- ``model.safetensors`` + ``card.json``: the checkpoint of the last finished epoch (``explorer.checkpoints``),
                    so a run folder is itself a checkpoint folder;
- ``train_state.safetensors``: everything ``--resume`` needs to continue after the last finished epoch (model,
                    optimiser, scheduler, random generators, the anchor stream), tensors in safetensors and the
                    rest as JSON in its metadata, replaced atomically (``explorer.training.state``).

JSON files are replaced atomically, so a kill at any moment leaves a readable run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from explorer.checkpoints import atomic_write_text

__all__ = ["CONFIG", "FINAL_STATES", "LAUNCH", "LOG", "METRICS", "RUN_TABLE_HEADERS", "SLURM", "STATUS",
           "TRAIN_STATE", "MetricsLog",
           "RunInfo", "epoch_records", "final_epoch", "read_json", "read_metrics", "read_run_config", "read_run_info",
           "run_curves", "update_status", "write_json", "write_status"]

CONFIG, STATUS, METRICS, LAUNCH, LOG = "config.json", "status.json", "metrics.jsonl", "launch.json", "train.log"
SLURM = "slurm.json"
TRAIN_STATE = "train_state.safetensors"
FINAL_STATES = ("finished", "failed", "cancelled")
RUN_TABLE_HEADERS = ("id", "method", "dataset", "model", "status", "progress", "device", "best test acc", "started")
STEP_METRICS = ("loss", "ce", "kd")  # in the step records
EPOCH_METRICS = ("train_accuracy", "test_accuracy", "test_ece")  # in the epoch records, drawn as curves


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
# Readers
# --------------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file written atomically; {} when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run folder's metrics.jsonl (any run folder, the demo checkpoints' too); [] when none.

    Lines that are not a JSON object (a torn last line while the run writes) are skipped.
    """
    try:
        lines = (run_dir / METRICS).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    """The end-of-epoch records of a run, in order."""
    return [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]


def final_epoch(run_dir: Path) -> dict[str, Any] | None:
    """The last epoch record of a *finished* run; None while it is unfinished, failed or missing."""
    if read_json(run_dir / STATUS).get("state") != "finished":
        return None
    epochs = epoch_records(run_dir)
    return epochs[-1] if epochs else None


def run_curves(run_dir: Path) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """(method, {metric: (epochs, values)}) of a run folder, for the live training curves.

    Loss, CE and KD come from the step records, placed at fractional epochs (step / steps per epoch), so a
    run has a curve before its first epoch ends; accuracies and ECE come from the epoch records.
    """
    config = read_json(run_dir / CONFIG)
    steps_per_epoch = config.get("steps_per_epoch")
    records = read_metrics(run_dir)
    steps = [r for r in records if r.get("kind") == "step"] if steps_per_epoch else []
    epochs = [r for r in records if r.get("kind") == "epoch"]
    curves = {metric: ([r["step"] / steps_per_epoch for r in steps], [r.get(metric) for r in steps])
              for metric in STEP_METRICS}
    curves.update({metric: ([r["epoch"] for r in epochs], [r.get(metric) for r in epochs]) for metric in EPOCH_METRICS})
    return config.get("method", "?"), curves


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
    """What the runs table shows of one run folder (its status, launch record, config and epoch records)."""
    status = read_json(run_dir / STATUS)
    launch = read_json(run_dir / LAUNCH)
    config = read_run_config(run_dir, launch)
    tests = [r["test_accuracy"] for r in epoch_records(run_dir) if "test_accuracy" in r]
    started = launch.get("queued_at") or (run_dir / STATUS).stat().st_ctime
    return RunInfo(run_id=run_dir.name, method=config.get("method", "?"), dataset=config.get("dataset", "?"),
                   model=config.get("model", "?"), state=status.get("state", "unknown"),
                   message=status.get("message", ""), progress=float(status.get("progress") or 0.0),
                   epoch=int(status.get("epoch") or 0), epochs=int(status.get("epochs") or config.get("epochs", 0)),
                   device=status.get("device") or config.get("device", "?"),
                   processes=int(launch.get("processes", 1)), gpus=tuple(launch.get("process", {}).get("gpus", ())),
                   best_test_accuracy=max(tests) if tests else None,
                   images_per_s=status.get("images_per_s"), eta_s=status.get("eta_s"), started=float(started),
                   path=run_dir)
