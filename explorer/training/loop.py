"""Train a classifier with plain cross-entropy, CS-KD or IPS: one loop, three methods.

    python -m explorer.train --dataset mnist5k --model small_cnn --method ips --epochs 30

A run writes one folder, ``OUT/RUN_ID`` (every JSON file replaced atomically, so a kill at any moment
leaves a readable run):

- ``config.json``   every argument, package versions, git commit, device, the exact command;
- ``status.json``   queued / running / finished / failed / cancelled, progress, epoch, step, images/s, ETA;
- ``metrics.jsonl`` one line per epoch (``"kind": "epoch"``: loss, ce, kd, train and test accuracy, test NLL,
                    ECE and Brier, lr, images/s, elapsed) and every ``--log-every`` steps (``"kind": "step"``);
- ``model.safetensors`` + ``card.json``: the checkpoint of the last finished epoch, so the run folder is
                    itself a checkpoint folder for ``explorer.evaluate`` and the app.

How the methods use a step (``B`` = ``--batch-size``):
- ``ce``: B anchors, cross-entropy.
- ``cskd``: B anchors + B same-class partners (2B images), CS-KD loss.
- ``ips``: B anchors + B partners, patch-swapped pairwise, IPS loss (2B images).
- ``--equal-compute``: CS-KD and IPS take B/2 anchors + B/2 partners, i.e. B images per step like CE.
Every method does ceil(N_train / B) steps per epoch, anchors drawn from a stream of random permutations of
the training set, so an epoch costs the same number of optimiser steps for all methods; with
``--equal-compute`` it also costs the same number of forwarded images.

Optimiser: SGD with Nesterov momentum 0.9, weight decay 5e-4, cosine learning-rate decay per step to 0.
SIGTERM or Ctrl-C ends a run as ``cancelled`` (the last epoch's checkpoint kept); a non-finite loss ends it
as ``failed``. Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel:
every rank draws the same global batch and trains on its slice of it, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import json
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from explorer import __version__
from explorer.checkpoints import atomic_write_text, save_checkpoint
from explorer.data import Dataset, DatasetError, augment, load_dataset
from explorer.device import resolve_device
from explorer.evaluate import classification_metrics, predict_logits
from explorer.ips import (
    ClassIndex,
    build_class_index,
    check_patch_size,
    cskd_loss,
    default_patch_size,
    dividing_patch_sizes,
    ips_loss,
    patch_swap,
    same_class_partners,
)
from explorer.models import ModelError, build_model

__all__ = ["METHODS", "AnchorStream", "ConfigError", "TrainConfig", "default_patch_size", "main", "method_loss",
           "parse_config", "run", "step_anchors", "step_images", "to_argv", "validate_config"]

METHODS = ("ce", "cskd", "ips")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXIT_FAILED, EXIT_BAD_ARGS, EXIT_CANCELLED = 1, 2, 128 + signal.SIGTERM


class ConfigError(ValueError):
    """A training argument that cannot work; the message says what is allowed."""


@dataclass
class TrainConfig:
    """Every training argument; the CLI flags are these names with dashes."""

    dataset: str = "mnist5k"
    model: str = "small_cnn"
    method: str = "ips"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 0
    patch_size: int = 0  # 0: auto, the largest divisor of the image side that is <= side / 4 (a 4x4 grid or finer)
    swap_ratio: float = 0.5
    swap_prob: float = 1.0
    temperature: float = 4.0
    kd_weight: float = 1.0
    equal_compute: bool = False
    device: str = "auto"
    data_root: str = "data"
    download: bool = False
    image_size: int = 32
    holdout: bool = False
    out: str = "runs"
    run_id: str = ""  # empty: generated from the time, method, dataset, model and seed
    log_every: int = 10


_HELP = {
    "dataset": "mnist5k (default, offline), digits, cifar10, cifar100 or imagefolder:PATH",
    "model": "small_cnn (default), resnet18 (CIFAR stem) or any torchvision classification model name",
    "method": "ce (baseline), cskd (CS-KD) or ips (intra-class patch swap)",
    "epochs": "training epochs",
    "batch_size": "anchors per step (images per step for CE and with --equal-compute)",
    "lr": "peak learning rate of SGD (cosine decay to 0)",
    "weight_decay": "SGD weight decay",
    "seed": "seed of the model initialisation and of every random draw",
    "patch_size": "IPS patch side in pixels, must divide the image size (0: auto, a 4x4 grid or finer)",
    "swap_ratio": "IPS: fraction of patch positions exchanged per pair, in [0, 1]",
    "swap_prob": "IPS: probability that a pair is swapped at all, in [0, 1]",
    "temperature": "distillation temperature T (CS-KD and IPS)",
    "kd_weight": "weight of the KL term (CS-KD and IPS)",
    "equal_compute": "CS-KD and IPS process B images per step (B/2 pairs), the same compute as CE",
    "device": "auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps",
    "data_root": "folder holding CIFAR (cifar-10-batches-py, cifar-100-python)",
    "download": "download CIFAR into --data-root when missing (needs internet)",
    "image_size": "imagefolder: images are resized to this square size",
    "holdout": "train on 80%% of the training split and report the metrics on the other 20%% (per class), "
               "to choose hyper-parameters without looking at the test split",
    "out": "folder that receives the run folder",
    "run_id": "name of the run folder (default: generated)",
    "log_every": "write a step record to metrics.jsonl every this many steps",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the run manager shows them verbatim)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m explorer.train", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=_HELP[f.name])
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            choices = METHODS if f.name == "method" else None
            parser.add_argument(flag, type=kind, default=f.default, choices=choices, help=_HELP[f.name])
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse CLI arguments into a config; bad syntax or values raise ``ConfigError`` (one line)."""
    args = _build_parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    _check_ranges(cfg)
    return cfg


def to_argv(cfg: TrainConfig) -> list[str]:
    """The CLI arguments that reproduce ``cfg`` exactly (every field spelled out)."""
    argv: list[str] = []
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return argv


def _check_ranges(cfg: TrainConfig) -> None:
    checks = [
        (cfg.epochs >= 1, f"--epochs must be at least 1; got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"--batch-size must be at least 2; got {cfg.batch_size}"),
        (not (cfg.equal_compute and cfg.batch_size % 2),
         f"--equal-compute needs an even --batch-size; got {cfg.batch_size}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be a positive number; got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be >= 0; got {cfg.weight_decay}"),
        (cfg.patch_size >= 0, f"--patch-size must be >= 0 (0: auto); got {cfg.patch_size}"),
        (0 <= cfg.swap_ratio <= 1, f"--swap-ratio must be in [0, 1]; got {cfg.swap_ratio}"),
        (0 <= cfg.swap_prob <= 1, f"--swap-prob must be in [0, 1]; got {cfg.swap_prob}"),
        (cfg.temperature > 0 and math.isfinite(cfg.temperature),
         f"--temperature must be positive; got {cfg.temperature}"),
        (cfg.kd_weight >= 0 and math.isfinite(cfg.kd_weight), f"--kd-weight must be >= 0; got {cfg.kd_weight}"),
        (cfg.image_size >= 4, f"--image-size must be at least 4; got {cfg.image_size}"),
        (cfg.log_every >= 1, f"--log-every must be at least 1; got {cfg.log_every}"),
        (cfg.run_id == "" or (RUN_ID_PATTERN.fullmatch(cfg.run_id) is not None and ".." not in cfg.run_id),
         f"--run-id may hold letters, digits, '.', '_' and '-' only (no '..' or '/'); got {cfg.run_id!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def step_anchors(cfg: TrainConfig) -> int:
    """Anchors drawn per optimiser step: B, or B/2 pairs for CS-KD and IPS with ``--equal-compute``."""
    return cfg.batch_size // 2 if (cfg.method != "ce" and cfg.equal_compute) else cfg.batch_size


def step_images(cfg: TrainConfig) -> int:
    """Images forwarded per optimiser step: the anchors, and their partners for CS-KD and IPS."""
    return step_anchors(cfg) * (1 if cfg.method == "ce" else 2)


def validate_config(cfg: TrainConfig, dataset: Dataset, world_size: int = 1) -> None:
    """Checks that need the dataset or the process count: the patch size must divide the image size, and
    under DistributedDataParallel every process must get an equal slice of the anchors."""
    anchors = step_anchors(cfg)
    if anchors % world_size:
        halved = ", halved by --equal-compute" if anchors != cfg.batch_size else ""
        raise ConfigError(f"{anchors} anchors per step (--batch-size {cfg.batch_size}{halved}) do not split evenly "
                          f"over {world_size} processes; pick a --batch-size that does")
    if cfg.method == "ips" and cfg.patch_size:
        try:
            check_patch_size(cfg.patch_size, dataset.image_size)
        except ValueError:
            h, w = dataset.image_size
            raise ConfigError(f"--patch-size {cfg.patch_size} does not divide the {h}x{w} images of {dataset.name}; "
                              f"allowed: {dividing_patch_sizes(h, w)}") from None


# --------------------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_status(run_dir: Path, state: str, **fields_: Any) -> None:
    """status.json: the state of the run and its progress (read by the run manager and the app)."""
    _write_json(run_dir / "status.json", {"state": state, "updated": time.time(), **fields_})


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
                patch_size: int, generator: torch.Generator, shard: slice) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step's (loss, ce, kd, number correct on view a) for the configured method.

    All random draws are made for the whole global batch and ``shard`` picks this process's part, so a
    DistributedDataParallel run sees exactly the batches of a single-process run.
    """
    images, labels = dataset.train_images, dataset.train_labels  # index_select: faster than images[i] on CPU
    x_a = augment(images.index_select(0, anchors), dataset.crop_padding, dataset.flip, generator)
    targets = labels.index_select(0, anchors)[shard]
    if cfg.method == "ce":
        logits = model(dataset.normalize(x_a[shard]))
        ce = F.cross_entropy(logits, targets)
        zero = torch.zeros((), device=ce.device)
        return ce, ce.detach(), zero, (logits.argmax(1) == targets).sum()
    partners = same_class_partners(anchors, class_index, generator)
    x_b = augment(images.index_select(0, partners), dataset.crop_padding, dataset.flip, generator)
    if cfg.method == "ips":
        x_a, x_b, _ = patch_swap(x_a, x_b, patch_size, cfg.swap_ratio, cfg.swap_prob, generator)
    logits_a, logits_b = model(dataset.normalize(torch.cat([x_a[shard], x_b[shard]]))).chunk(2)
    loss_fn = ips_loss if cfg.method == "ips" else cskd_loss
    out = loss_fn(logits_a, logits_b, targets, cfg.temperature, cfg.kd_weight)
    return out.total, out.ce.detach(), out.kd.detach(), (logits_a.argmax(1) == targets).sum()


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
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


def _default_run_id(cfg: TrainConfig) -> str:
    dataset = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.dataset.split(":")[0])
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-{dataset}-{cfg.model}-s{cfg.seed}-{os.getpid()}"


def _card(cfg: TrainConfig, dataset: Dataset, patch_size: int, epoch: int, test: dict[str, float],
          command: str) -> dict[str, Any]:
    hyper = {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "model", "method", "device", "out",
                                                               "run_id", "data_root", "download", "log_every")}
    hyper["patch_size"] = patch_size
    return {"dataset": dataset.name, "model": cfg.model, "method": cfg.method, "in_channels": dataset.channels,
            "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
            "image_size": list(dataset.image_size), "mean": list(dataset.mean), "std": list(dataset.std),
            "hyperparameters": hyper, "epoch": epoch, "epochs": cfg.epochs, "test_metrics": test,
            "command": command, "explorer": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run(cfg: TrainConfig) -> int:
    """Train as ``cfg`` says, writing the run folder; returns the process exit code."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    is_main = rank == 0

    run_dir = Path(cfg.out) / (cfg.run_id or _default_run_id(cfg))
    command = shlex.join([sys.executable.split("/")[-1], "-m", "explorer.train", *to_argv(cfg)])

    def fail(message: str, code: int) -> int:
        print(f"explorer.train: error: {message}", file=sys.stderr)
        if is_main and run_dir.is_dir():
            write_status(run_dir, "failed", message=message, progress=0.0)
        return code

    # ---- setup: device, data, model (argument errors end here with one line) ----
    try:
        device = resolve_device(cfg.device)
        if distributed:
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
        dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size)
        if cfg.holdout:
            dataset = dataset.holdout()
        validate_config(cfg, dataset, world)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device)
    except (ConfigError, DatasetError, ModelError, ValueError) as exc:
        return fail(str(exc), EXIT_BAD_ARGS)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bare_model = model.module if distributed else model

    dataset = dataset.to(device)
    patch_size = cfg.patch_size or default_patch_size(dataset.image_size)
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    anchors_stream = AnchorStream(len(dataset.train_labels), generator, device)
    anchors_per_step = step_anchors(cfg)
    images_per_step = step_images(cfg)
    shard_size = anchors_per_step // world
    shard = slice(rank * shard_size, (rank + 1) * shard_size) if distributed else slice(None)
    steps_per_epoch = math.ceil(len(dataset.train_labels) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)))

    records: list[dict[str, Any]] = []
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", {**asdict(cfg), "run_id": run_dir.name, "patch_size_used": patch_size,
                                              "anchors_per_step": anchors_per_step, "images_per_step": images_per_step,
                                              "steps_per_epoch": steps_per_epoch, "command": command,
                                              "environment": _environment(device, world)})
        atomic_write_text(run_dir / "metrics.jsonl", "")
        print(f"run {run_dir}  |  {cfg.method} on {dataset.name} with {cfg.model}  |  device {device}  |  "
              f"{steps_per_epoch} steps x {cfg.epochs} epochs, {images_per_step} images per step", flush=True)

    def status(state: str, step: int, message: str = "", **extra: Any) -> None:
        if is_main:
            write_status(run_dir, state, message=message, progress=step / total_steps, step=step,
                         total_steps=total_steps, epoch=step // steps_per_epoch, epochs=cfg.epochs,
                         device=str(device), pid=os.getpid(), **extra)

    def log(record: dict[str, Any]) -> None:
        if is_main:
            records.append(record)
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    progress = _progress_bar(total_steps, disable=not is_main)
    status("running", 0, "starting")
    start = time.perf_counter()
    step = 0
    with _StopRequested() as stop_requested:
        try:
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                sums = torch.zeros(4, device=device)  # loss, ce, kd, correct: summed on the device, read per log
                window = torch.zeros(3, device=device)
                window_start, window_steps = time.perf_counter(), 0
                for _ in range(steps_per_epoch):
                    if stop_requested(device, distributed):
                        raise _Cancelled()
                    anchors = anchors_stream.next(anchors_per_step)
                    loss, ce, kd, correct = method_loss(cfg, model, dataset, anchors, class_index, patch_size,
                                                        generator, shard)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    window_steps += 1
                    parts = torch.stack([loss.detach(), ce, kd])
                    window += parts
                    sums += torch.cat([parts, correct.float()[None]])
                    progress.update(1)
                    if step % cfg.log_every == 0 or step == total_steps:
                        if distributed:  # the mean over every shard: the logged loss and the non-finite verdict
                            dist.all_reduce(window)  # are then the same on all ranks, which stop together
                            window /= world
                        mean = (window / window_steps).tolist()
                        if not all(math.isfinite(v) for v in mean):
                            raise _NonFinite(f"the loss became non-finite ({mean[0]}) at epoch {epoch}, step {step}; "
                                             f"try a lower --lr (now {cfg.lr})")
                        seconds = time.perf_counter() - window_start
                        speed = window_steps * images_per_step / seconds
                        eta = (total_steps - step) * seconds / window_steps
                        log({"kind": "step", "epoch": epoch, "step": step, "loss": mean[0], "ce": mean[1],
                             "kd": mean[2], "lr": scheduler.get_last_lr()[0], "images_per_s": speed,
                             "elapsed": time.perf_counter() - start})
                        status("running", step, f"epoch {epoch}/{cfg.epochs}", images_per_s=speed, eta_s=eta)
                        progress.set_postfix(loss=f"{mean[0]:.3f}", refresh=False)
                        window.zero_()
                        window_start, window_steps = time.perf_counter(), 0

                # ---- end of epoch: test metrics, checkpoint, one line ----
                if distributed:  # loss, ce, kd averaged and correct answers summed over every shard
                    dist.all_reduce(sums)
                    sums[:3] /= world
                if is_main:
                    loss_sum, ce_sum, kd_sum, correct_sum = sums.tolist()
                    test = classification_metrics(predict_logits(bare_model, dataset, dataset.test_images),
                                                  dataset.test_labels)
                    elapsed = time.perf_counter() - start
                    record = {"kind": "epoch", "epoch": epoch, "step": step, "loss": loss_sum / steps_per_epoch,
                              "ce": ce_sum / steps_per_epoch, "kd": kd_sum / steps_per_epoch,
                              "train_accuracy": correct_sum / (steps_per_epoch * anchors_per_step),
                              **{f"test_{k}": v for k, v in test.items()}, "lr": scheduler.get_last_lr()[0],
                              "images_per_s": step * images_per_step / elapsed, "elapsed": elapsed}
                    log(record)
                    save_checkpoint(run_dir, bare_model, _card(cfg, dataset, patch_size, epoch, test, command))
                    status("running", step, f"epoch {epoch}/{cfg.epochs} done",
                           images_per_s=record["images_per_s"], eta_s=(total_steps - step) * elapsed / step,
                           test_accuracy=test["accuracy"])
                    progress.write(f"epoch {epoch:3d}/{cfg.epochs}  loss {record['loss']:.4f}  ce {record['ce']:.4f}  "
                                   f"kd {record['kd']:.4f}  train {100 * record['train_accuracy']:.2f}%  "
                                   f"test {100 * test['accuracy']:.2f}%  nll {test['nll']:.4f}  "
                                   f"ece {100 * test['ece']:.2f}%  {record['images_per_s']:.0f} img/s")
        except _Cancelled:
            progress.close()
            status("cancelled", step, f"cancelled by signal {stop_requested.signal} at step {step}; "
                   f"the checkpoint of the last finished epoch is kept")
            return EXIT_CANCELLED
        except _NonFinite as exc:
            progress.close()
            status("failed", step, str(exc))
            print(f"explorer.train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:
            progress.close()
            status("failed", step, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if distributed:
                dist.destroy_process_group()
    progress.close()
    status("finished", total_steps, f"finished {cfg.epochs} epochs in {time.perf_counter() - start:.1f} s",
           test_accuracy=records[-1]["test_accuracy"] if records else None)
    return 0


class _Cancelled(Exception):
    pass


class _NonFinite(Exception):
    pass


def _progress_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=disable or not sys.stderr.isatty(), leave=False)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"explorer.train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    return run(cfg)
