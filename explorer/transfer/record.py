"""What a transfer run writes: config, status, metrics, checkpoint and training state, in the run-folder format of
``explorer.training.runfolder`` (the run manager and the app read it as any run's), and one line per epoch.

config.json is the run's arguments plus ``task``, ``method`` ("<task>:<backbone method>", the runs table's column),
``model`` ("<head>/<backbone architecture>"), the backbone run's id and model card, and the environment. The model
card adds ``task``, ``head`` and ``backbone`` to the fields every checkpoint has; its ``test_metrics`` are the
task's metrics, and its ``model`` is no classifier's name, so the classification pickers and loaders refuse it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from explorer import __version__
from explorer.checkpoints import save_checkpoint
from explorer.training.processes import process_identity
from explorer.training.recorder import environment
from explorer.training.runfolder import CONFIG, MetricsLog, write_json, write_status
from explorer.training.state import save_train_state

if TYPE_CHECKING:
    from explorer.transfer.loop import TransferSession

__all__ = ["TransferRecorder", "transfer_card"]


def _identity(s: TransferSession) -> dict[str, Any]:
    """What names the run in its config and its card."""
    method = str(s.backbone.card.get("method", "?"))
    return {"task": s.cfg.task, "head": s.cfg.head_name, "method": f"{s.cfg.task}:{method}",
            "model": f"{s.cfg.head_name}/{s.backbone.architecture}", "backbone_method": method,
            "backbone_run_id": s.backbone.run_id, "backbone_card": s.backbone.card}


def transfer_card(s: TransferSession, epoch: int, test: dict[str, float]) -> dict[str, Any]:
    """The model card of the transfer checkpoint after ``epoch``."""
    dataset = s.dataset
    hyper = {k: v for k, v in asdict(s.cfg).items() if k not in ("task", "backbone", "dataset", "head", "device",
                                                                 "out", "run_id", "data_root", "download",
                                                                 "log_every", "resume")}
    return {**_identity(s), "dataset": dataset.name, "in_channels": dataset.channels,
            "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
            "image_size": list(dataset.image_size), "mean": list(s.backbone.mean), "std": list(s.backbone.std),
            "backbone_architecture": s.backbone.architecture, "backbone_num_classes": s.backbone.card["num_classes"],
            "hyperparameters": {**hyper, "precision": s.precision}, "epoch": epoch, "epochs": s.cfg.epochs,
            "test_metrics": test, "command": s.command, "explorer": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class TransferRecorder:
    """The run folder of a transfer run and its printed lines."""

    def __init__(self, s: TransferSession) -> None:
        self.s = s
        self.metrics: MetricsLog | None = None
        self.start_time = time.perf_counter() - (s.resumed or {}).get("elapsed", 0.0)
        identity = process_identity(os.getpid())
        self.pid_start = identity[0] if identity else None
        self.last_test: dict[str, float] = {}

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def start(self) -> None:
        s = self.s
        if s.resumed:
            epoch = s.resumed["epoch"]
            self.metrics = MetricsLog(s.run_dir, resume_after_epoch=epoch)
            self.metrics.append({"kind": "resume", "epoch": epoch, "step": s.step, "elapsed": self.elapsed,
                                 "time": time.time(), "environment": environment(s.device, 1)})
            print(f"run {s.run_dir}  |  resumed after epoch {epoch}/{s.cfg.epochs}", flush=True)
            return
        s.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(s.run_dir / CONFIG, {**asdict(s.cfg), **_identity(s), "cli": "explorer.transfer",
                                        "run_id": s.run_dir.name,
                                        "precision_used": s.precision, "steps_per_epoch": s.steps_per_epoch,
                                        "command": s.command, "environment": environment(s.device, 1)})
        self.metrics = MetricsLog(s.run_dir)
        print(f"run {s.run_dir}  |  {s.cfg.task} with a {s.cfg.head_name} head on the {s.backbone.architecture} of "
              f"{s.backbone.run_id}  |  {s.dataset.name}  |  device {s.device}, {s.precision}  |  "
              f"{s.steps_per_epoch} steps x {s.cfg.epochs} epochs", flush=True)

    def status(self, state: str, message: str = "", **extra: Any) -> None:
        s = self.s
        write_status(s.run_dir, state, message=message, progress=s.step / s.total_steps, step=s.step,
                     total_steps=s.total_steps, epoch=s.step // s.steps_per_epoch, epochs=s.cfg.epochs,
                     device=str(s.device), pid=os.getpid(), pid_start=self.pid_start,
                     **{f"test_{k}": v for k, v in self.last_test.items()}, **extra)

    def steps(self, epoch: int, mean: dict[str, float], window_steps: int, seconds: float) -> None:
        s = self.s
        speed = window_steps * s.cfg.batch_size / seconds
        self.metrics.append({"kind": "step", "epoch": epoch, "step": s.step, **mean,
                             "lr": s.scheduler.get_last_lr()[0], "images_per_s": speed, "elapsed": self.elapsed})
        self.status("running", f"epoch {epoch}/{s.cfg.epochs}", images_per_s=speed,
                    eta_s=(s.total_steps - s.step) * seconds / window_steps)

    def epoch(self, epoch: int, losses: dict[str, float], test: dict[str, float]) -> None:
        """The epoch record, then the checkpoint, then the training state (a state always has its record)."""
        s = self.s
        elapsed = self.elapsed
        record = {"kind": "epoch", "epoch": epoch, "step": s.step, **losses,
                  **{f"test_{k}": v for k, v in test.items()}, "lr": s.scheduler.get_last_lr()[0],
                  "images_per_s": s.step * s.cfg.batch_size / elapsed, "elapsed": elapsed}
        self.metrics.append(record)
        self.metrics.sync()
        save_checkpoint(s.run_dir, s.bare_model, transfer_card(s, epoch, test))
        self.last_test = test
        save_train_state(s, elapsed, None)
        self.status("running", f"epoch {epoch}/{s.cfg.epochs} done", images_per_s=record["images_per_s"],
                    eta_s=(s.total_steps - s.step) * elapsed / s.step)
        shown = "  ".join(f"{name} {100 * value:.2f}" for name, value in test.items())
        print(f"epoch {epoch:3d}/{s.cfg.epochs}  loss {losses['loss']:.4f}  test {shown}  "
              f"{record['images_per_s']:.0f} img/s", flush=True)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
