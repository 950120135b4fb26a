"""Fine-tune a classification run's backbone under a segmentation or detection head, and evaluate it.

    python -m explorer.transfer --task segmentation --backbone checkpoints/mnist5k-small_cnn-ips
    python -m explorer.transfer --task detection --backbone runs/RUN_ID --epochs 8 --freeze-backbone

Read ``run`` top to bottom: ``setup`` (backbone, data, model, optimiser), then per epoch ``train_epoch`` (the
steps) and ``end_epoch`` (test metrics, checkpoint, training state). A run writes a run folder like every training
run (``explorer.training.runfolder``): config.json (with the backbone run's id and model card), status.json, the
append-only metrics.jsonl, model.safetensors with a card whose ``test_metrics`` hold the task's metrics
(``explorer.transfer.metrics``), and the training state ``--resume`` continues from (``explorer.training.state``).
SIGTERM or Ctrl-C ends it as ``cancelled`` (exit 128 + the signal) at the next step; a backbone, dataset or
setting that cannot work ends it at once with one line and exit code 2.

Batches are drawn as in classification: random permutations of the training scenes (``loop.AnchorStream``), on the
CPU, then moved to the device. Scenes are not augmented: every scene is already a random composition.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from explorer.checkpoints import CheckpointError
from explorer.data import DatasetError
from explorer.data.scenes import DenseDataset, DenseSplit, load_dense_dataset
from explorer.device import resolve_device
from explorer.training.command import config_argv
from explorer.training.config import ConfigError
from explorer.training.loop import Cancelled, StopRequested
from explorer.training.methods import MethodContext
from explorer.training.optimizer import build_optimizer, build_scheduler
from explorer.training.precision import grad_scaler, resolve_precision
from explorer.training.runfolder import update_status
from explorer.training.session import AnchorStream
from explorer.training.state import restore_train_state
from explorer.transfer.backbones import Backbone, BackboneError, load_backbone
from explorer.transfer.config import TransferConfig, parse_transfer_config
from explorer.transfer.heads import DenseModel, build_dense_model
from explorer.transfer.metrics import detection_metrics, segmentation_metrics
from explorer.transfer.record import TransferRecorder

__all__ = ["TransferSession", "evaluate", "main", "run", "setup", "targets_of"]

EXIT_FAILED, EXIT_BAD_ARGS = 1, 2
MIN_FEATURE_SIDE = 4  # a head needs at least this many feature cells across a scene
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TransferSession:
    """Everything a transfer run trains with, built once by ``setup`` (the fields ``training.state`` saves too)."""

    cfg: TransferConfig
    run_dir: Path
    command: str
    device: torch.device
    dataset: DenseDataset
    backbone: Backbone
    bare_model: DenseModel
    precision: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    anchors: AnchorStream
    steps_per_epoch: int
    step: int = 0
    resumed: dict[str, Any] | None = None
    rank: int = 0
    world: int = 1
    distributed: bool = False
    context: MethodContext = field(default_factory=MethodContext)  # no method state: training.state saves it empty

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch


def _check_fit(cfg: TransferConfig, backbone: Backbone, dataset: DenseDataset) -> None:
    """``ConfigError`` unless the backbone takes the scenes: their channels, and a side the head can tile."""
    if backbone.in_channels != dataset.channels:
        raise ConfigError(f"the backbone of {backbone.run_id} takes {backbone.in_channels}-channel images, but "
                          f"{dataset.name} has {dataset.channels} channels; pick a backbone trained on such images")
    for side in dataset.image_size:
        if side % backbone.stride or side // backbone.stride < MIN_FEATURE_SIDE:
            raise ConfigError(f"a {side}-pixel scene does not fit a {cfg.head_name} head on a {backbone.architecture} "
                              f"backbone (stride {backbone.stride}): the side must be a multiple of {backbone.stride} "
                              f"and at least {MIN_FEATURE_SIDE * backbone.stride}")


def _default_run_id(cfg: TransferConfig, backbone: Backbone) -> str:
    method = str(backbone.card.get("method", "model"))
    return (f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.task}-{method}-{cfg.dataset}-{backbone.architecture}-s{cfg.seed}"
            f"-{os.getpid()}")


def setup(cfg: TransferConfig) -> TransferSession:
    """Backbone, scenes, model, optimiser and random streams; a bad argument raises (one line)."""
    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg.backbone)
    dataset = load_dense_dataset(cfg.dataset, cfg.task, scene_size=cfg.scene_size, train_scenes=cfg.train_scenes,
                                 test_scenes=cfg.test_scenes, scene_seed=cfg.scene_seed, data_root=cfg.data_root,
                                 download=cfg.download, image_size=cfg.image_size)
    _check_fit(cfg, backbone, dataset)
    if cfg.batch_size > len(dataset.train):
        raise ConfigError(f"--batch-size {cfg.batch_size} is more than the {len(dataset.train)} training scenes")
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = build_dense_model(cfg.task, cfg.head_name, backbone, dataset.num_classes, dataset.image_size).to(device)
    if cfg.freeze_backbone:
        model.freeze_backbone()
    steps_per_epoch = math.ceil(len(dataset.train) / cfg.batch_size)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    s = TransferSession(
        cfg=cfg, run_dir=Path(cfg.out) / (cfg.run_id or _default_run_id(cfg, backbone)),
        command=shlex.join(["python", "-m", "explorer.transfer", *config_argv(cfg)]), device=device,
        dataset=dataset, backbone=backbone, bare_model=model, precision=precision, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps_per_epoch), scaler=grad_scaler(precision, device),
        generator=generator, anchors=AnchorStream(len(dataset.train), generator, torch.device("cpu")),
        steps_per_epoch=steps_per_epoch)
    if cfg.resume:
        s.resumed = restore_train_state(s)
    return s


def targets_of(split: DenseSplit, indices: list[int], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The detection targets (``boxes``, ``labels``) of scenes ``indices``, on ``device``."""
    return [{"boxes": split.boxes[i].to(device), "labels": split.labels[i].to(device)} for i in indices]


@contextlib.contextmanager
def _autocast(s: TransferSession) -> Iterator[None]:
    dtype = _AUTOCAST.get(s.precision)
    with torch.autocast(s.device.type, dtype=dtype, enabled=dtype is not None):
        yield


def train_step(s: TransferSession) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step on the next batch; returns the loss and its parts (on the device, not read back)."""
    indices = s.anchors.next(s.cfg.batch_size)
    split = s.dataset.train
    images = split.images.index_select(0, indices).to(s.device, non_blocking=True)
    with _autocast(s):
        loss, parts = s.bare_model.loss(images, split.masks.index_select(0, indices).to(s.device),
                                        targets_of(split, indices.tolist(), s.device))
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss.float()).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    s.step += 1
    return loss.detach(), parts


def train_epoch(s: TransferSession, epoch: int, recorder: TransferRecorder, stop: StopRequested) -> dict[str, float]:
    """The steps of one epoch; returns the epoch's mean loss and loss parts."""
    s.bare_model.train()
    if s.cfg.freeze_backbone:
        s.bare_model.freeze_backbone()
    sums: dict[str, torch.Tensor] = {}
    window: dict[str, torch.Tensor] = {}
    window_start, window_steps = time.perf_counter(), 0
    for _ in range(s.steps_per_epoch):
        if stop(s):
            raise Cancelled()
        loss, parts = train_step(s)
        for name, value in {"loss": loss, **parts}.items():
            sums[name] = sums.get(name, 0.0) + value.float()
            window[name] = window.get(name, 0.0) + value.float()
        window_steps += 1
        if s.step % s.cfg.log_every == 0 or s.step == s.total_steps:
            mean = {name: float(value) / window_steps for name, value in window.items()}
            if not math.isfinite(mean["loss"]):
                raise _NonFinite(f"the loss became non-finite ({mean['loss']}) at epoch {epoch}, step {s.step}; "
                                 f"try a lower --lr (now {s.cfg.lr})")
            recorder.steps(epoch, mean, window_steps, time.perf_counter() - window_start)
            window, window_start, window_steps = {}, time.perf_counter(), 0
    return {name: float(value) / s.steps_per_epoch for name, value in sums.items()}


class _NonFinite(Exception):
    pass


@torch.no_grad()
def evaluate(model: DenseModel, dataset: DenseDataset, device: torch.device, batch_size: int = 100,
             precision: str = "fp32") -> dict[str, float]:
    """The task's metrics of ``model`` on the test split (``explorer.transfer.metrics``)."""
    split, dtype = dataset.test, _AUTOCAST.get(precision)
    was_training = model.training
    model.eval()
    predictions: list[Any] = []
    for start in range(0, len(split), batch_size):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model.predict(split.images[start:start + batch_size].to(device))
        predictions += list(out) if model.task == "detection" else [out.cpu()]
    model.train(was_training)
    if model.task == "segmentation":
        return segmentation_metrics(torch.cat(predictions), split.masks, dataset.num_classes + 1)
    return detection_metrics(predictions, targets_of(split, list(range(len(split))), torch.device("cpu")))


def _not_started(cfg: TransferConfig, state: str, message: str) -> None:
    """One line on stderr; status.json says so when the run's folder exists (the run manager made it)."""
    print(f"explorer.transfer: {'error: ' if state == 'failed' else ''}{message}", file=sys.stderr)
    run_dir = Path(cfg.out) / cfg.run_id if cfg.run_id else None
    if run_dir is not None and run_dir.is_dir():
        update_status(run_dir, state, message, keep_progress=bool(cfg.resume), progress=0.0)


def run(cfg: TransferConfig) -> int:
    """Fine-tune and evaluate as ``cfg`` says, writing the run folder; returns the process exit code."""
    with StopRequested() as stop:
        try:
            with stop.raising():
                s = setup(cfg)
        except Cancelled:
            _not_started(cfg, "cancelled", f"cancelled by signal {stop.signal} during start-up")
            return stop.exit_code
        except (ConfigError, DatasetError, BackboneError, CheckpointError, ValueError) as exc:
            _not_started(cfg, "failed", str(exc))
            return EXIT_BAD_ARGS
        recorder = TransferRecorder(s)
        recorder.start()
        first_epoch = s.step // s.steps_per_epoch + 1
        recorder.status("running", f"resuming after epoch {first_epoch - 1}" if s.resumed else "starting")
        try:
            for epoch in range(first_epoch, cfg.epochs + 1):
                losses = train_epoch(s, epoch, recorder, stop)
                recorder.epoch(epoch, losses, evaluate(s.bare_model, s.dataset, s.device, precision=s.precision))
        except Cancelled:
            recorder.status("cancelled", f"cancelled by signal {stop.signal} at step {s.step}; the checkpoint and "
                            f"training state of the last finished epoch are kept (--resume continues)")
            return stop.exit_code
        except _NonFinite as exc:
            recorder.status("failed", str(exc))
            print(f"explorer.transfer: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            recorder.status("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            recorder.close()
    recorder.status("finished", f"finished {cfg.epochs} epochs in {recorder.elapsed:.1f} s")
    print(f"run folder: {s.run_dir}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_transfer_config(argv)
    except ConfigError as exc:
        print(f"explorer.transfer: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    return run(cfg)
