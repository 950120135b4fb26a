"""Train a classifier with plain cross-entropy, CS-KD or IPS: one loop, every method of the registry.

    python -m explorer.train --dataset mnist5k --model small_cnn --method ips --epochs 30

Read ``run`` top to bottom: ``setup`` (device, data, model, optimiser), then per epoch ``train_epoch`` (the
steps) and ``end_epoch`` (test metrics, checkpoint, one line); a ``Recorder`` writes the run folder
(``explorer.training.runfolder``) and prints, on the main process only.

How the methods use a step (``B`` = ``--batch-size``): ``ce`` forwards B anchors; the pair methods (``cskd``,
``ips``) forward B anchors + B same-class partners (2B images), IPS after swapping patches within each pair;
``--equal-compute`` gives the pair methods B/2 anchors, i.e. B images per step like CE. Every method does
ceil(N_train / B) steps per epoch, anchors drawn from a stream of random permutations of the training set, so
an epoch costs the same number of optimiser steps for all methods.

Optimiser: SGD with Nesterov momentum 0.9, weight decay 5e-4, cosine learning-rate decay per step to 0.
SIGTERM or Ctrl-C ends a run as ``cancelled`` (the last epoch's checkpoint kept); a non-finite loss ends it
as ``failed``. Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel:
every rank draws the same global batch and trains on its slice of it, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from explorer import __version__
from explorer.checkpoints import save_checkpoint
from explorer.data import Dataset, DatasetError, augment, load_dataset
from explorer.device import resolve_device
from explorer.evaluate import classification_metrics, predict_logits
from explorer.ips import ClassIndex, build_class_index, default_patch_size, same_class_partners
from explorer.models import ModelError, build_model
from explorer.training.config import (
    ConfigError,
    TrainConfig,
    parse_config,
    step_anchors,
    step_images,
    to_argv,
    validate_config,
)
from explorer.training.methods import METHODS, StepBatch, StepOutput
from explorer.training.runfolder import CONFIG, MetricsLog, write_json, write_status

__all__ = ["AnchorStream", "Recorder", "Session", "end_epoch", "main", "method_loss", "run", "setup", "train_epoch"]

EXIT_FAILED, EXIT_BAD_ARGS, EXIT_CANCELLED = 1, 2, 128 + signal.SIGTERM


# --------------------------------------------------------------------------------------------------
# Sampling and the step
# --------------------------------------------------------------------------------------------------
class AnchorStream:
    """Endless anchors: the training indices in random order, one fresh permutation after another."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.generator, self.device = n, generator, device
        self.buffer = torch.empty(0, dtype=torch.long, device=device)

    def next(self, count: int) -> Tensor:
        while self.buffer.numel() < count:
            perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.buffer = torch.cat([self.buffer, perm])
        batch, self.buffer = self.buffer[:count], self.buffer[count:]
        return batch


def method_loss(cfg: TrainConfig, model: nn.Module, dataset: Dataset, anchors: Tensor, class_index: ClassIndex,
                patch_size: int, generator: torch.Generator, shard: slice) -> StepOutput:
    """One step of ``cfg``'s method on the global batch ``anchors``: augment, draw partners, call the method.

    The draws happen in a fixed order (anchor crops, partners, partner crops, then the method's own), all for the
    whole global batch, and ``shard`` picks this process's part.
    """
    method = METHODS[cfg.method]
    images, labels = dataset.train_images, dataset.train_labels  # index_select: faster than images[i] on CPU
    x_a = augment(images.index_select(0, anchors), dataset.crop_padding, dataset.flip, generator)
    x_b = None
    if method.images_per_anchor == 2:
        partners = same_class_partners(anchors, class_index, generator)
        x_b = augment(images.index_select(0, partners), dataset.crop_padding, dataset.flip, generator)
    batch = StepBatch(anchors=x_a, partners=x_b, targets=labels.index_select(0, anchors)[shard], shard=shard,
                      forward=lambda x: model(dataset.normalize(x)), cfg=cfg, patch_size=patch_size,
                      generator=generator)
    return method.step(batch)


# --------------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------------
@dataclass
class Session:
    """Everything a run trains with, built once by ``setup``."""

    cfg: TrainConfig
    run_dir: Path
    command: str
    device: torch.device
    rank: int
    world: int
    dataset: Dataset
    model: nn.Module  # DistributedDataParallel-wrapped under torchrun
    bare_model: nn.Module  # the model itself, for evaluation and checkpoints
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    class_index: ClassIndex
    generator: torch.Generator
    anchors: AnchorStream
    patch_size: int
    shard: slice
    steps_per_epoch: int
    step: int = 0  # optimiser steps done so far

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world) if world > 1 else (0, 1)


def _default_run_id(cfg: TrainConfig) -> str:
    dataset = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.dataset.split(":")[0])
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-{dataset}-{cfg.model}-s{cfg.seed}-{os.getpid()}"


def setup(cfg: TrainConfig) -> Session:
    """Device, data, model, optimiser and the random streams of a run; a bad argument raises (one line)."""
    rank, world = _distributed_rank()
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size)
    if cfg.holdout:
        dataset = dataset.holdout()
    validate_config(cfg, dataset.image_size, dataset.name, world)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device)
    bare_model = model
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = dataset.to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    shard_size = step_anchors(cfg) // world
    steps_per_epoch = math.ceil(len(dataset.train_labels) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)))
    return Session(
        cfg=cfg, run_dir=Path(cfg.out) / (cfg.run_id or _default_run_id(cfg)),
        command=shlex.join([sys.executable.split("/")[-1], "-m", "explorer.train", *to_argv(cfg)]),
        device=device, rank=rank, world=world, dataset=dataset, model=model, bare_model=bare_model,
        optimizer=optimizer, scheduler=scheduler,
        class_index=build_class_index(dataset.train_labels, dataset.num_classes), generator=generator,
        anchors=AnchorStream(len(dataset.train_labels), generator, device),
        patch_size=cfg.patch_size or default_patch_size(dataset.image_size),
        shard=slice(rank * shard_size, (rank + 1) * shard_size) if world > 1 else slice(None),
        steps_per_epoch=steps_per_epoch)


# --------------------------------------------------------------------------------------------------
# What a run writes and prints
# --------------------------------------------------------------------------------------------------
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment(device: torch.device, world_size: int) -> dict[str, Any]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "explorer": __version__, "git_commit": _git_commit(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "world_size": world_size, "host": socket.gethostname(), "threads": torch.get_num_threads()}


def _card(s: Session, epoch: int, test: dict[str, float]) -> dict[str, Any]:
    """The model card of the checkpoint after ``epoch``."""
    cfg, dataset = s.cfg, s.dataset
    hyper = {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "model", "method", "device", "out",
                                                               "run_id", "data_root", "download", "log_every")}
    hyper["patch_size"] = s.patch_size
    return {"dataset": dataset.name, "model": cfg.model, "method": cfg.method, "in_channels": dataset.channels,
            "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
            "image_size": list(dataset.image_size), "mean": list(dataset.mean), "std": list(dataset.std),
            "hyperparameters": hyper, "epoch": epoch, "epochs": cfg.epochs, "test_metrics": test,
            "command": s.command, "explorer": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _progress_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=disable or not sys.stderr.isatty(), leave=False)


class Recorder:
    """The run folder and the terminal: config, status, metrics, checkpoints, the progress bar, epoch lines.

    Only the main process records; on the other ranks of a DistributedDataParallel run every call does nothing.
    """

    def __init__(self, s: Session) -> None:
        self.s = s
        self.enabled = s.rank == 0
        self.last_test_accuracy: float | None = None
        self.metrics: MetricsLog | None = None
        self.progress = _progress_bar(s.total_steps, disable=not self.enabled)
        self.start_time = time.perf_counter()

    def start(self) -> None:
        """Create the run folder with its config.json and an empty metrics.jsonl; one line about the run."""
        s = self.s
        if not self.enabled:
            return
        s.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(s.run_dir / CONFIG, {
            **asdict(s.cfg), "run_id": s.run_dir.name, "patch_size_used": s.patch_size,
            "anchors_per_step": step_anchors(s.cfg), "images_per_step": step_images(s.cfg),
            "steps_per_epoch": s.steps_per_epoch, "command": s.command,
            "environment": _environment(s.device, s.world)})
        self.metrics = MetricsLog(s.run_dir)
        print(f"run {s.run_dir}  |  {s.cfg.method} on {s.dataset.name} with {s.cfg.model}  |  device {s.device}  |  "
              f"{s.steps_per_epoch} steps x {s.cfg.epochs} epochs, {step_images(s.cfg)} images per step", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def status(self, state: str, step: int, message: str = "", **extra: Any) -> None:
        s = self.s
        if self.enabled:
            write_status(s.run_dir, state, message=message, progress=step / s.total_steps, step=step,
                         total_steps=s.total_steps, epoch=step // s.steps_per_epoch, epochs=s.cfg.epochs,
                         device=str(s.device), pid=os.getpid(), **extra)

    def steps(self, epoch: int, step: int, mean: list[float], window_steps: int, seconds: float) -> None:
        """The record of the last ``window_steps`` steps: their mean loss, CE and KD, speed, ETA."""
        s = self.s
        if not self.enabled:
            return
        speed = window_steps * step_images(s.cfg) / seconds
        self.metrics.append({"kind": "step", "epoch": epoch, "step": step, "loss": mean[0], "ce": mean[1],
                             "kd": mean[2], "lr": s.scheduler.get_last_lr()[0], "images_per_s": speed,
                             "elapsed": self.elapsed})
        self.status("running", step, f"epoch {epoch}/{s.cfg.epochs}", images_per_s=speed,
                    eta_s=(s.total_steps - step) * seconds / window_steps)
        self.progress.set_postfix(loss=f"{mean[0]:.3f}", refresh=False)

    def epoch(self, record: dict[str, Any], test: dict[str, float]) -> None:
        """The epoch record, the checkpoint of this epoch, its status and one printed line."""
        s = self.s
        if not self.enabled:
            return
        self.metrics.append(record)
        self.metrics.sync()
        save_checkpoint(s.run_dir, s.bare_model, _card(s, record["epoch"], test))
        step = record["step"]
        self.last_test_accuracy = test["accuracy"]
        self.status("running", step, f"epoch {record['epoch']}/{s.cfg.epochs} done",
                    images_per_s=record["images_per_s"], eta_s=(s.total_steps - step) * record["elapsed"] / step,
                    test_accuracy=test["accuracy"])
        self.progress.write(f"epoch {record['epoch']:3d}/{s.cfg.epochs}  loss {record['loss']:.4f}  "
                            f"ce {record['ce']:.4f}  kd {record['kd']:.4f}  "
                            f"train {100 * record['train_accuracy']:.2f}%  test {100 * test['accuracy']:.2f}%  "
                            f"nll {test['nll']:.4f}  ece {100 * test['ece']:.2f}%  {record['images_per_s']:.0f} img/s")

    def close(self) -> None:
        self.progress.close()
        if self.metrics is not None:
            self.metrics.close()


# --------------------------------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------------------------------
class _Cancelled(Exception):
    pass


class _NonFinite(Exception):
    pass


class _StopRequested:
    """While active, SIGTERM / SIGINT set a flag and the loop ends cleanly at the next step."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequested:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self._SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __call__(self, device: torch.device, distributed: bool) -> bool:
        if not distributed:
            return self.signal is not None
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=device)
        dist.all_reduce(flag)  # every rank stops at the same step, else the others would wait forever
        return bool(flag.item() > 0)


def train_epoch(s: Session, epoch: int, recorder: Recorder, stop: _StopRequested) -> Tensor:
    """The optimiser steps of one epoch; returns the sums of loss, CE, KD and correct anchors (on the device).

    Losses are summed on the device and read back only at log boundaries (every ``--log-every`` steps), where the
    window's mean is logged and checked to be finite.
    """
    cfg = s.cfg
    s.model.train()
    sums = torch.zeros(4, device=s.device)
    window = torch.zeros(3, device=s.device)
    window_start, window_steps = time.perf_counter(), 0
    for _ in range(s.steps_per_epoch):
        if stop(s.device, s.distributed):
            raise _Cancelled()
        out = method_loss(cfg, s.model, s.dataset, s.anchors.next(step_anchors(cfg)), s.class_index, s.patch_size,
                          s.generator, s.shard)
        s.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        s.optimizer.step()
        s.scheduler.step()
        s.step += 1
        window_steps += 1
        parts = torch.stack([out.loss.detach(), out.ce, out.kd])
        window += parts
        sums += torch.cat([parts, out.correct.float()[None]])
        recorder.progress.update(1)
        if s.step % cfg.log_every == 0 or s.step == s.total_steps:
            if s.distributed:  # the mean over every shard: the logged loss and the non-finite verdict
                dist.all_reduce(window)  # are then the same on all ranks, which stop together
                window /= s.world
            mean = (window / window_steps).tolist()
            if not all(math.isfinite(v) for v in mean):
                raise _NonFinite(f"the loss became non-finite ({mean[0]}) at epoch {epoch}, step {s.step}; "
                                 f"try a lower --lr (now {cfg.lr})")
            recorder.steps(epoch, s.step, mean, window_steps, time.perf_counter() - window_start)
            window.zero_()
            window_start, window_steps = time.perf_counter(), 0
    return sums


def end_epoch(s: Session, epoch: int, sums: Tensor, recorder: Recorder) -> None:
    """Test metrics, the epoch record and the checkpoint (main process; the sums are reduced over all ranks)."""
    if s.distributed:  # loss, ce, kd averaged and correct answers summed over every shard
        dist.all_reduce(sums)
        sums[:3] /= s.world
    if not recorder.enabled:
        return
    loss_sum, ce_sum, kd_sum, correct_sum = sums.tolist()
    test = classification_metrics(predict_logits(s.bare_model, s.dataset, s.dataset.test_images),
                                  s.dataset.test_labels)
    elapsed = recorder.elapsed
    record = {"kind": "epoch", "epoch": epoch, "step": s.step, "loss": loss_sum / s.steps_per_epoch,
              "ce": ce_sum / s.steps_per_epoch, "kd": kd_sum / s.steps_per_epoch,
              "train_accuracy": correct_sum / (s.steps_per_epoch * step_anchors(s.cfg)),
              **{f"test_{k}": v for k, v in test.items()}, "lr": s.scheduler.get_last_lr()[0],
              "images_per_s": s.step * step_images(s.cfg) / elapsed, "elapsed": elapsed}
    recorder.epoch(record, test)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
def _fail(message: str, cfg: TrainConfig) -> int:
    """A run that could not start: one line on stderr, and status.json says so when its folder exists."""
    print(f"explorer.train: error: {message}", file=sys.stderr)
    run_dir = Path(cfg.out) / cfg.run_id if cfg.run_id else None
    if _distributed_rank()[0] == 0 and run_dir is not None and run_dir.is_dir():
        write_status(run_dir, "failed", message=message, progress=0.0)
    return EXIT_BAD_ARGS


def run(cfg: TrainConfig) -> int:
    """Train as ``cfg`` says, writing the run folder; returns the process exit code."""
    try:
        s = setup(cfg)
    except (ConfigError, DatasetError, ModelError, ValueError) as exc:
        return _fail(str(exc), cfg)
    recorder = Recorder(s)
    recorder.start()
    recorder.status("running", 0, "starting")
    with _StopRequested() as stop:
        try:
            for epoch in range(1, cfg.epochs + 1):
                end_epoch(s, epoch, train_epoch(s, epoch, recorder, stop), recorder)
        except _Cancelled:
            recorder.status("cancelled", s.step, f"cancelled by signal {stop.signal} at step {s.step}; "
                            f"the checkpoint of the last finished epoch is kept")
            return EXIT_CANCELLED
        except _NonFinite as exc:
            recorder.status("failed", s.step, str(exc))
            print(f"explorer.train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            recorder.status("failed", s.step, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            recorder.close()
            if s.distributed:
                dist.destroy_process_group()
    recorder.status("finished", s.total_steps, f"finished {cfg.epochs} epochs in {recorder.elapsed:.1f} s",
                    test_accuracy=recorder.last_test_accuracy)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"explorer.train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    return run(cfg)
