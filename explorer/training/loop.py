"""Train a classifier with plain cross-entropy, CS-KD or IPS: one loop, every method of the registry.

    python -m explorer.train --dataset mnist5k --model small_cnn --method ips --epochs 30

Read ``run`` top to bottom: ``setup`` (device, data, model, optimiser), then per epoch ``train_epoch`` (the
steps, each a ``train_step``) and ``end_epoch`` (test metrics, checkpoint, one line); a ``Recorder``
(``explorer.training.recorder``) writes the run folder and prints, on the main process only.

How the methods use a step (``B`` = ``--batch-size``): ``ce`` forwards B anchors; the pair methods (``cskd``,
``ips``) forward B anchors + B same-class partners (2B images), IPS after swapping patches within each pair;
``--equal-compute`` gives the pair methods B/2 anchors, i.e. B images per step like CE. Every method does
ceil(N_train / B) steps per epoch, anchors drawn from a stream of random permutations of the training set, so
an epoch costs the same number of optimiser steps for all methods.

Optimiser and schedule: ``explorer.training.optimizer`` (SGD, Nesterov momentum 0.9; cosine or step decay per
step, optional warm-up). Precision, channels-last and ``--compile``: ``explorer.training.precision``. Nothing is
read back from the device inside a step: losses are summed on the device and read at log and epoch boundaries.
Every epoch end writes the checkpoint and the training state (``explorer.training.state``), from which
``--resume RUN_DIR`` continues a cancelled, failed or interrupted run exactly.
SIGTERM or Ctrl-C ends a run as ``cancelled`` with exit code 128 + the signal (143, 130): while training at the next
step (the last epoch's checkpoint and state kept), during start-up at once; a non-finite loss ends it as ``failed``.
Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel: every rank draws the
same global batch and trains on its slice of it, and only rank 0 writes files.

Data (``--data-mode``): small datasets live whole on the device as tensors (``method_loss`` indexes them). Image
folders and Tiny-ImageNet too big for the memory budget are streamed from disk (``explorer.training.streamed``):
the anchors and partners of a step come from DataLoader workers instead, and the same augmentation and method step
train on them; ``step_loss`` and ``predict_test_split`` are where the two meet.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from explorer.data import Dataset, DatasetError, augment, open_dataset
from explorer.data.streaming import StreamedDataset, default_workers
from explorer.device import resolve_device
from explorer.evaluate import classification_metrics, predict_logits
from explorer.ips import ClassIndex, build_class_index, default_patch_size, same_class_partners
from explorer.models import ModelError, build_model
from explorer.training.command import training_command
from explorer.training.config import (
    ConfigError,
    TrainConfig,
    parse_config,
    step_anchors,
    step_images,
    validate_config,
)
from explorer.training.method_losses import distinct_partners
from explorer.training.methods import METHODS, MethodContext, StepBatch, StepOutput
from explorer.training.optimizer import build_optimizer, build_scheduler
from explorer.training.precision import grad_scaler, model_forward, resolve_precision, uses_channels_last
from explorer.training.recorder import Recorder
from explorer.training.runfolder import RunFolderBusy, sole_writer, update_status
from explorer.training.session import AnchorStream, Session
from explorer.training.state import restore_train_state
from explorer.training.streamed import open_streams, streamed_method_loss, streamed_test_logits
from explorer.training.teacher import load_teacher, teacher_forward

__all__ = ["AnchorStream", "Cancelled", "Session", "StopRequested", "build_session", "end_epoch", "main",
           "method_loss", "predict_test_split", "run", "setup", "step_loss", "train_epoch", "train_step"]

EXIT_FAILED, EXIT_BAD_ARGS = 1, 2


# --------------------------------------------------------------------------------------------------
# Sampling and the step
# --------------------------------------------------------------------------------------------------
def method_loss(cfg: TrainConfig, forward: Callable[[Tensor], Tensor], dataset: Dataset, anchors: Tensor,
                class_index: ClassIndex, patch_size: int, generator: torch.Generator, shard: slice,
                context: MethodContext | None = None) -> StepOutput:
    """One step of ``cfg``'s method on the global batch ``anchors``: augment, draw partners, call the method.

    ``forward`` maps uint8 images to fp32 logits (``precision.model_forward``). The draws happen in a fixed order
    (anchor crops, partners, partner crops, then the method's own), all for the whole global batch, and ``shard``
    picks this process's part. ``context`` holds what the method keeps across steps (the session's).
    """
    method = METHODS[cfg.method]
    images, labels = dataset.train_images, dataset.train_labels  # index_select: faster than images[i] on CPU
    raw = images.index_select(0, anchors)
    x_a = augment(raw, dataset.crop_padding, dataset.flip, generator)
    x_b = None
    if method.partners == 1:
        partners = same_class_partners(anchors, class_index, generator)
        x_b = augment(images.index_select(0, partners), dataset.crop_padding, dataset.flip, generator)
    elif method.partners > 1:
        partners = distinct_partners(anchors, class_index, method.partners, generator).flatten()
        x_b = augment(images.index_select(0, partners), dataset.crop_padding, dataset.flip, generator)
    anchor_labels = labels.index_select(0, anchors)
    batch = StepBatch(anchors=x_a, partners=x_b, targets=anchor_labels[shard], shard=shard,
                      forward=forward, cfg=cfg, patch_size=patch_size, generator=generator, labels=anchor_labels,
                      raw=raw, indices=anchors,
                      augment=partial(augment, padding=dataset.crop_padding, flip=dataset.flip, generator=generator),
                      context=context or MethodContext())
    return method.step(batch)


# --------------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------------
def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun, (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world) if world > 1 else (0, 1)


def _local_world() -> int:
    """torchrun's processes on this machine (they share its CPUs)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _default_run_id(cfg: TrainConfig) -> str:
    dataset = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.dataset.split(":")[0])
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-{dataset}-{cfg.model}-s{cfg.seed}-{os.getpid()}"


def open_training_data(cfg: TrainConfig, world: int = 1, download: bool | None = None,
                       num_workers: int | None = None) -> Dataset | StreamedDataset:
    """The data a run trains on, in memory or streamed as ``--data-mode`` decides, its holdout split taken, checked
    against the config (``ConfigError``, ``DatasetError``). The run manager validates a launch through this too, so
    the app refuses exactly what the training process would (``download``: the config's unless given)."""
    dataset = open_dataset(cfg.dataset, cfg.data_root, cfg.download if download is None else download,
                           cfg.image_size, cfg.data_mode, num_workers=num_workers)
    if cfg.holdout:
        dataset = dataset.holdout()
    validate_config(cfg, dataset.image_size, dataset.name, world, train_size=len(dataset.train_labels))
    partners = METHODS[cfg.method].partners
    if isinstance(dataset, StreamedDataset) and partners > 1:
        raise ConfigError(f"--method {cfg.method} draws {partners} same-class images per anchor, which streamed data "
                          f"does not offer; use --data-mode memory")
    return dataset


def setup(cfg: TrainConfig) -> Session:
    """Device, data, model, optimiser and the random streams of a run; a bad argument raises (one line).

    With ``--resume`` the session is built as for a fresh run, then the saved training state replaces the
    model, optimiser, scheduler, generators and step count.
    """
    rank, world = _distributed_rank()
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dataset = open_training_data(cfg, world, num_workers=default_workers(_local_world()))
    teacher = load_teacher(cfg, dataset, device) if METHODS[cfg.method].needs_teacher else None
    s = build_session(cfg, dataset, device, rank, world, teacher)
    if cfg.resume:
        s.resumed = restore_train_state(s)
        if s.streams is not None:  # the batches follow from (seed, epoch): the step count is the position
            s.streams.train.seek(s.step)
    return s


def build_session(cfg: TrainConfig, dataset: Dataset | StreamedDataset, device: torch.device, rank: int = 0,
                  world: int = 1, teacher: nn.Module | None = None) -> Session:
    """The model (in its precision, layout, DDP wrapper, compiled or not), optimiser, scheduler, random streams and
    method state of a run on ``dataset``; the benchmark times steps of sessions built here. ``teacher``: the trained
    model ``--method kd`` distils from (on ``device``, in eval mode)."""
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device)
    channels_last = uses_channels_last(cfg.channels_last, device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    bare_model = model
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    streams = None
    if isinstance(dataset, StreamedDataset):
        streams = open_streams(cfg, dataset, device, rank, world, _local_world())
    else:
        dataset = dataset.to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed if streams is None else streams.seed)
    shard_size = step_anchors(cfg) // world
    steps_per_epoch = math.ceil(len(dataset.train_labels) / cfg.batch_size)
    optimizer = build_optimizer(model.parameters(), cfg, device)
    method = METHODS[cfg.method]
    labels = dataset.train_labels.to(device)
    context = MethodContext(
        state=method.initial_state(labels, dataset.num_classes) if method.initial_state else {},
        teacher=None if teacher is None else teacher_forward(teacher, dataset.normalize, device), model=bare_model)
    return Session(
        cfg=cfg, run_dir=Path(cfg.out) / (cfg.run_id or _default_run_id(cfg)),
        command=shlex.join(training_command(cfg, python=sys.executable.split("/")[-1])),
        device=device, rank=rank, world=world, dataset=dataset, model=model, bare_model=bare_model,
        forward=model_forward(model, dataset.normalize, precision, device, channels_last), precision=precision,
        optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg, steps_per_epoch),
        scaler=grad_scaler(precision, device),
        class_index=build_class_index(dataset.train_labels, dataset.num_classes), generator=generator,
        anchors=AnchorStream(len(dataset.train_labels), generator, device),
        patch_size=cfg.patch_size or default_patch_size(dataset.image_size),
        shard=slice(rank * shard_size, (rank + 1) * shard_size) if world > 1 else slice(None),
        steps_per_epoch=steps_per_epoch, streams=streams, context=context)


# --------------------------------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------------------------------
class Cancelled(KeyboardInterrupt):
    """A signal stopped the run. A KeyboardInterrupt, so that no ``except Exception`` on its way swallows it when
    the signal handler raises it during start-up (a decoder skipping unreadable images), and so that DataLoader
    workers forked then end quietly on Ctrl-C."""


class _NonFinite(Exception):
    pass


class StopRequested:
    """While active, SIGTERM / SIGINT stop the run: inside ``raising()`` (start-up, which has no step boundary to
    wait for) the handler raises ``Cancelled`` at once, cutting a dataset decode or a wait short; elsewhere it
    sets a flag and the loop ends cleanly at the next step boundary."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._raise = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self._SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Within: a signal raises ``Cancelled`` where the code is (start-up)."""
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum
        if self._raise:
            self._raise = False  # once: a second signal while start-up unwinds only sets the flag
            raise Cancelled()

    @property
    def exit_code(self) -> int:
        """128 + the signal, the shell's convention: 143 for SIGTERM (the run manager's cancel), 130 for Ctrl-C."""
        return 128 + self.signal

    def __call__(self, s: Session) -> bool:
        """Stop before the next step? Alone: as soon as a signal came. Under DDP every rank must stop at the same
        step, and agreeing takes an all_reduce (a host sync), so the ranks agree at log boundaries only."""
        if not s.distributed:
            return self.signal is not None
        if s.step % s.cfg.log_every:
            return False
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=s.device)
        dist.all_reduce(flag)  # every rank stops at the same step, else the others would wait forever
        return bool(flag.item() > 0)


def step_loss(s: Session) -> tuple[StepOutput, int]:
    """The method's output on the next step's anchors (from memory or from the stream) and how many anchors this
    process trained on."""
    if s.streams is not None:
        batch = s.streams.train.next()
        return (streamed_method_loss(s.cfg, s.forward, s.dataset, batch, s.patch_size, s.generator, s.context),
                len(batch.labels))
    out = method_loss(s.cfg, s.forward, s.dataset, s.anchors.next(step_anchors(s.cfg)), s.class_index, s.patch_size,
                      s.generator, s.shard, s.context)
    return out, step_anchors(s.cfg) // s.world


def train_step(s: Session) -> Tensor:
    """One optimiser step; returns its [loss, ce, kd, correct anchors, anchors, summed teacher confidence, correct
    teachers] on the device (the teacher values 0 for methods without a teacher), read back by nobody here."""
    out, anchors = step_loss(s)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(out.loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    s.step += 1
    zero = torch.zeros((), device=out.ce.device)
    teacher = [zero if v is None else v.float() for v in (out.teacher_confidence, out.teacher_correct)]
    return torch.stack([out.loss.detach(), out.ce, out.kd, out.correct.float(),
                        torch.full((), float(anchors), device=out.ce.device), *teacher])


def train_epoch(s: Session, epoch: int, recorder: Recorder, stop: StopRequested) -> Tensor:
    """The optimiser steps of one epoch; returns the sums of ``train_step``'s values (on the device).

    Losses are summed on the device and read back only at log boundaries (every ``--log-every`` steps), where the
    window's mean is logged and checked to be finite.
    """
    cfg = s.cfg
    s.model.train()
    s.context.epoch = epoch
    sums = torch.zeros(7, device=s.device)
    window = torch.zeros(3, device=s.device)
    window_start, window_steps = time.perf_counter(), 0
    for _ in range(s.steps_per_epoch):
        if stop(s):
            raise Cancelled()
        parts = train_step(s)
        window += parts[:3]
        sums += parts
        window_steps += 1
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


def predict_test_split(s: Session) -> tuple[Tensor, Tensor]:
    """Logits of the model on the test split and the labels they answer (streamed: of the readable images)."""
    if s.streams is not None:
        return streamed_test_logits(s.bare_model, s.dataset, s.streams.test)
    return predict_logits(s.bare_model, s.dataset, s.dataset.test_images), s.dataset.test_labels


def end_epoch(s: Session, epoch: int, sums: Tensor, recorder: Recorder) -> None:
    """Test metrics, the epoch record, the checkpoint and the training state (main process; the sums are reduced
    over all ranks)."""
    if s.distributed:  # loss, ce, kd averaged and correct answers summed over every shard
        dist.all_reduce(sums)
        sums[:3] /= s.world
    if not recorder.enabled:
        return
    loss_sum, ce_sum, kd_sum, correct_sum, anchor_sum, teacher_confidence, teacher_correct = sums.tolist()
    test = classification_metrics(*predict_test_split(s))
    elapsed = recorder.elapsed
    record = {"kind": "epoch", "epoch": epoch, "step": s.step, "loss": loss_sum / s.steps_per_epoch,
              "ce": ce_sum / s.steps_per_epoch, "kd": kd_sum / s.steps_per_epoch,
              "train_accuracy": correct_sum / anchor_sum,
              **{f"test_{k}": v for k, v in test.items()}, "lr": s.scheduler.get_last_lr()[0],
              "images_per_s": s.step * step_images(s.cfg) / elapsed, "elapsed": elapsed,
              **({"unreadable_images": s.streams.unreadable} if s.streams is not None else {})}
    if METHODS[s.cfg.method].swaps_patches:  # why IPS is over-confident: how sure, and how right, its teachers are
        record |= {"teacher_confidence": teacher_confidence / anchor_sum,
                   "teacher_correct": teacher_correct / anchor_sum}
    recorder.epoch(record, test)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
def _not_started(cfg: TrainConfig, run_dir: Path | None, state: str, message: str) -> None:
    """A run that ended during start-up (failed or cancelled): one line on stderr, and status.json says so in
    ``run_dir``, the folder that existed before (the run manager made it, or ``--resume`` continues it: a resume
    keeps its progress); None: the folder was made by this run, and is removed."""
    print(f"explorer.train: {'error: ' if state == 'failed' else ''}{message}", file=sys.stderr)
    if _distributed_rank()[0] == 0 and run_dir is not None:
        update_status(run_dir, state, message, keep_progress=bool(cfg.resume), progress=0.0)


def run(cfg: TrainConfig) -> int:
    """Train as ``cfg`` says, writing the run folder as its one writer; returns the process exit code. A folder
    that another process writes, or that holds a trained run a fresh start would overwrite, is refused at once."""
    run_dir = Path(cfg.out) / (cfg.run_id or _default_run_id(cfg))
    try:
        with sole_writer(run_dir, resuming=bool(cfg.resume), enabled=_distributed_rank()[0] == 0) as created:
            return _train_into(cfg, run_dir, None if created else run_dir)
    except RunFolderBusy as exc:
        print(f"explorer.train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS


def _train_into(cfg: TrainConfig, run_dir: Path, existing: Path | None) -> int:
    with StopRequested() as stop:
        try:
            with stop.raising():
                s = setup(cfg)
            s.run_dir = run_dir
        except Cancelled:
            kept = ("; the checkpoint and training state of the last finished epoch are kept (--resume continues)"
                    if cfg.resume else ", before the first step")
            _not_started(cfg, existing, "cancelled", f"cancelled by signal {stop.signal} during start-up{kept}")
            return stop.exit_code
        except (ConfigError, DatasetError, ModelError, ValueError) as exc:
            _not_started(cfg, existing, "failed", str(exc))
            return EXIT_BAD_ARGS
        recorder = Recorder(s)
        recorder.start()
        first_epoch = s.step // s.steps_per_epoch + 1
        recorder.status("running", s.step, f"resuming after epoch {first_epoch - 1}" if s.resumed else "starting")
        try:
            for epoch in range(first_epoch, cfg.epochs + 1):
                end_epoch(s, epoch, train_epoch(s, epoch, recorder, stop), recorder)
        except Cancelled:
            recorder.status("cancelled", s.step, f"cancelled by signal {stop.signal} at step {s.step}; the checkpoint "
                            f"and training state of the last finished epoch are kept (--resume continues)")
            return stop.exit_code
        except _NonFinite as exc:
            recorder.status("failed", s.step, str(exc))
            print(f"explorer.train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            recorder.status("failed", s.step, f"{type(exc).__name__}: {exc}")
            raise
        else:
            recorder.close()
            epochs = f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}"
            recorder.status("finished", s.total_steps, f"finished {epochs} in {recorder.elapsed:.1f} s",
                            test_accuracy=recorder.last_test_accuracy)
            if s.distributed:  # no rank exits before rank 0 has written the run's last file: torchrun stops every
                dist.barrier()  # process when one exits badly, and rank 0 would be stopped in mid-write
        finally:
            recorder.close()
            if s.distributed:
                dist.destroy_process_group()
    if recorder.enabled:
        print(f"checkpoint: {s.run_dir}  |  evaluate it: python -m explorer.evaluate {s.run_dir}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"explorer.train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    return run(cfg)
