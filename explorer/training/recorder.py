"""What a run writes and prints: config, status, metrics (and their TensorBoard copy), checkpoints and training
state, the progress bar.

The loop (``explorer.training.loop``) calls a ``Recorder`` at its start, at log boundaries and at epoch ends;
the file formats belong to ``explorer.training.runfolder``, the training state to ``explorer.training.state``.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from explorer import __version__
from explorer.checkpoints import save_checkpoint
from explorer.training.config import step_anchors, step_images
from explorer.training.events import EventLog
from explorer.training.processes import process_identity
from explorer.training.runfolder import CONFIG, MetricsLog, write_json, write_status
from explorer.training.session import Session
from explorer.training.state import save_train_state

__all__ = ["Recorder", "environment"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """The software and machine a run trained on, for its run folder (the transfer runs record it too)."""
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "explorer": __version__, "git_commit": _git_commit(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "world_size": world_size, "host": socket.gethostname(), "threads": torch.get_num_threads()}


def _card(s: Session, epoch: int, test: dict[str, float]) -> dict[str, Any]:
    """The model card of the checkpoint after ``epoch``."""
    cfg, dataset = s.cfg, s.dataset
    hyper = {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "model", "method", "device", "out", "run_id",
                                                               "data_root", "download", "log_every", "resume",
                                                               "channels_last", "compile")}
    hyper.update(patch_size=s.patch_size, precision=s.precision)
    return {"dataset": dataset.name, "model": cfg.model, "method": cfg.method, "in_channels": dataset.channels,
            "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
            "image_size": list(dataset.image_size), "mean": list(dataset.mean), "std": list(dataset.std),
            "hyperparameters": hyper, "epoch": epoch, "epochs": cfg.epochs, "test_metrics": test,
            "command": s.command, "explorer": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _progress_bar(total: int, done: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=disable or not sys.stderr.isatty(), leave=False)


class Recorder:
    """The run folder and the terminal: config, status, metrics, checkpoints, the progress bar, epoch lines.

    Only the main process records; on the other ranks of a DistributedDataParallel run every call does nothing.
    A resumed run keeps its config.json, continues its metrics.jsonl and counts its training time on from the
    saved state.
    """

    def __init__(self, s: Session) -> None:
        self.s = s
        self.enabled = s.rank == 0
        resumed = s.resumed or {}
        self.last_test_accuracy: float | None = resumed.get("last_test_accuracy")
        self.metrics: MetricsLog | None = None
        self.events: EventLog | None = None  # the TensorBoard copy of the metrics
        self.progress = _progress_bar(s.total_steps, s.step, disable=not self.enabled)
        self.start_time = time.perf_counter() - resumed.get("elapsed", 0.0)
        identity = process_identity(os.getpid())  # with the pid in status.json: tells a reused pid from this process
        self.pid_start = identity[0] if identity else None

    def start(self) -> None:
        """Create the run folder with its config.json and an empty metrics.jsonl (a resumed run: cut its metrics
        back to the saved epoch and note the resume there); one line about the run."""
        s = self.s
        if not self.enabled:
            return
        if s.resumed:
            epoch = s.resumed["epoch"]
            self.metrics = MetricsLog(s.run_dir, resume_after_epoch=epoch)
            self.events = EventLog(s.run_dir, resume_step=s.step)
            self.metrics.append({"kind": "resume", "epoch": epoch, "step": s.step, "elapsed": self.elapsed,
                                 "time": time.time(), "environment": environment(s.device, s.world)})
            print(f"run {s.run_dir}  |  resumed after epoch {epoch}/{s.cfg.epochs} (step {s.step})  |  "
                  f"device {s.device}, {s.precision}", flush=True)
            return
        s.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(s.run_dir / CONFIG, {
            **asdict(s.cfg), "run_id": s.run_dir.name, "patch_size_used": s.patch_size, "precision_used": s.precision,
            "anchors_per_step": step_anchors(s.cfg), "images_per_step": step_images(s.cfg),
            "steps_per_epoch": s.steps_per_epoch, "command": s.command,
            "environment": environment(s.device, s.world)})
        self.metrics = MetricsLog(s.run_dir)
        self.events = EventLog(s.run_dir)
        print(f"run {s.run_dir}  |  {s.cfg.method} on {s.dataset.name} with {s.cfg.model}  |  device {s.device}, "
              f"{s.precision}  |  {s.steps_per_epoch} steps x {s.cfg.epochs} epochs, {step_images(s.cfg)} images "
              f"per step", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def status(self, state: str, step: int, message: str = "", **extra: Any) -> None:
        s = self.s
        if self.enabled:
            write_status(s.run_dir, state, message=message, progress=step / s.total_steps, step=step,
                         total_steps=s.total_steps, epoch=step // s.steps_per_epoch, epochs=s.cfg.epochs,
                         device=str(s.device), pid=os.getpid(),
                         pid_start=self.pid_start, **extra)

    def steps(self, epoch: int, step: int, mean: list[float], window_steps: int, seconds: float) -> None:
        """The record of the last ``window_steps`` steps: their mean loss, CE and KD, speed, ETA."""
        s = self.s
        if not self.enabled:
            return
        speed = window_steps * step_images(s.cfg) / seconds
        self._append({"kind": "step", "epoch": epoch, "step": step, "loss": mean[0], "ce": mean[1],
                             "kd": mean[2], "lr": s.scheduler.get_last_lr()[0], "images_per_s": speed,
                             "elapsed": self.elapsed})
        self.status("running", step, f"epoch {epoch}/{s.cfg.epochs}", images_per_s=speed,
                    eta_s=(s.total_steps - step) * seconds / window_steps)
        self.progress.set_postfix(loss=f"{mean[0]:.3f}", refresh=False)

    def epoch(self, record: dict[str, Any], test: dict[str, float]) -> None:
        """The epoch record, the checkpoint and training state of this epoch, its status and one printed line.

        In this order, so that a training state always has its epoch's record and checkpoint on the disk."""
        s = self.s
        if not self.enabled:
            return
        self._append(record)
        self.metrics.sync()
        self.events.flush()
        save_checkpoint(s.run_dir, s.bare_model, _card(s, record["epoch"], test))
        self.last_test_accuracy = test["accuracy"]
        save_train_state(s, record["elapsed"], self.last_test_accuracy)
        step = record["step"]
        self.status("running", step, f"epoch {record['epoch']}/{s.cfg.epochs} done",
                    images_per_s=record["images_per_s"], eta_s=(s.total_steps - step) * record["elapsed"] / step,
                    test_accuracy=test["accuracy"])
        self.progress.write(f"epoch {record['epoch']:3d}/{s.cfg.epochs}  loss {record['loss']:.4f}  "
                            f"ce {record['ce']:.4f}  kd {record['kd']:.4f}  "
                            f"train {100 * record['train_accuracy']:.2f}%  test {100 * test['accuracy']:.2f}%  "
                            f"nll {test['nll']:.4f}  ece {100 * test['ece']:.2f}%  {record['images_per_s']:.0f} img/s")

    def _append(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)
        self.events.append(record)

    def close(self) -> None:
        self.progress.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.events is not None:
            self.events.close()
