"""Benchmark of the core and the training step: ``python -m explorer.bench``.

On a named dataset (default mnist5k with small_cnn), or with ``--image-shape CxHxW --classes K`` on synthetic
tensors of that shape (random uint8 images, K balanced classes, CIFAR-style 1/8-side crop padding and flips;
labelled "synthetic" in the output), e.g. ``--model resnet18 --image-shape 3x32x32 --classes 100``:

1. same-class partner sampling + gathering the partners + ``patch_swap`` on one batch, beside
   ``torchvision.transforms.v2.CutMix`` on the same batch (the cheapest well-known batch augmentation), on uint8
   images (what training swaps) and on normalised float32 images, for each ``--patch-sizes``;
2. one training step (augmentation, forward, backward, SGD update) of every method, with and without
   ``--equal-compute``, in each ``--precision``: milliseconds, training images/s, the ratio to the CE step, and
   the pipeline efficiency: training images/s over the images/s of a pure step of the same model, image count
   and precision (forward, cross-entropy, backward, SGD update) on a pre-made normalised tensor on the device.
   Above 1 is possible for CS-KD, whose partners get a forward pass but no backward.

Every figure is the fastest of ``--rounds`` medians of repeated timings (the augmentation candidates timed
round-robin, so that a shared machine's drifts hit both alike); timings on CUDA synchronise around each repeat.
Every training step is the training loop's own ``train_step`` on a session built by ``build_session``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from explorer.data import Dataset, load_dataset
from explorer.device import resolve_device
from explorer.ips import build_class_index, check_patch_size, default_patch_size, patch_swap, same_class_partners
from explorer.models import build_model
from explorer.native_memory import glibc
from explorer.training.config import TrainConfig, step_images
from explorer.training.loop import build_session, train_step
from explorer.training.methods import METHODS
from explorer.training.optimizer import build_optimizer
from explorer.training.precision import grad_scaler, model_forward, resolve_precision, uses_channels_last

__all__ = ["interleaved_medians", "main", "steady_allocator", "synthetic_dataset"]

# Every method of the registry at its own images per step, then the two-view ones at B images (--equal-compute)
SETTINGS = [(name, False) for name in METHODS] + [(m.name, True) for m in METHODS.values() if m.two_views]


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, block: int = 1,
                        warmup: int = 5) -> dict[str, float]:
    """Median seconds per call of each function over ``repeats`` samples, each the mean of ``block`` calls in a
    row; the samples are taken round-robin, so that the drifts of a shared machine hit every function alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(block):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / block)
    return {name: statistics.median(t) for name, t in times.items()}


def steady_allocator() -> bool:
    """Make glibc keep freed memory instead of returning it to the OS after every step (Linux only).

    Otherwise the tens of MB that a 2B-image step frees are unmapped and faulted in again, at a cost that
    depends on the heap's history and swung the IPS / CE step ratio between 2.0 and 2.9 from one run of this
    benchmark to the next; whole training runs, one method from start to end, measure 1.8 to 1.9.
    """
    libc = glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_threshold, 1 << 30))


def synthetic_dataset(shape: tuple[int, int, int], classes: int, batch_size: int) -> Dataset:
    """Random uint8 images of ``shape`` in ``classes`` balanced classes (50 per class, at least 10 batches)."""
    channels, h, w = shape
    count = max(50 * classes, 10 * batch_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, channels, h, w), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % classes
    return Dataset(f"synthetic {channels}x{h}x{w}, {classes} classes", images, labels, images[:batch_size],
                   labels[:batch_size], tuple(str(k) for k in range(classes)), (0.5,) * channels, (0.25,) * channels,
                   crop_padding=max(1, h // 8), flip=channels == 3)


def _augmentation(dataset: Dataset, all_images: torch.Tensor, device: torch.device, batch_size: int,
                  patch_size: int, repeats: int, rounds: int) -> tuple[float, float]:
    """(partners + gather + patch_swap, CutMix) seconds on the first ``batch_size`` of ``all_images``."""
    images = all_images[:batch_size]
    labels = dataset.train_labels[:batch_size]
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    anchors = torch.arange(batch_size, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    cutmix = v2.CutMix(num_classes=dataset.num_classes)

    def ips_pairs() -> None:
        partners = same_class_partners(anchors, class_index, generator)
        patch_swap(images, all_images.index_select(0, partners), patch_size, 0.5, 1.0, generator)

    results = [interleaved_medians({"ips": ips_pairs, "cutmix": lambda: cutmix(images, labels)}, repeats * 10, device)
               for _ in range(rounds)]
    return min(r["ips"] for r in results), min(r["cutmix"] for r in results)


def _pure_step(cfg: TrainConfig, dataset: Dataset, device: torch.device, images: int) -> Callable[[], None]:
    """Forward, cross-entropy, backward and SGD update of ``cfg``'s model in ``cfg``'s precision and layout on
    ``images`` pre-made normalised images on the device: the step without data pipeline or method."""
    torch.manual_seed(0)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device).train()
    channels_last = uses_channels_last(cfg.channels_last, device, model)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    precision = resolve_precision(cfg.precision, device)
    forward = model_forward(model, lambda x: x, precision, device, channels_last)
    optimizer, scaler = build_optimizer(model.parameters(), cfg, device), grad_scaler(precision, device)
    index = torch.arange(images, device=device) % len(dataset.train_labels)
    inputs, targets = dataset.normalize(dataset.train_images[index]), dataset.train_labels[index]

    def step() -> None:
        loss = F.cross_entropy(forward(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _median(step: Callable[[], None], device: torch.device, args: argparse.Namespace) -> float:
    return interleaved_medians({"step": step}, args.repeats, device, warmup=args.warmup)["step"]


def _training_steps(base: TrainConfig, dataset: Dataset, device: torch.device, precisions: list[str],
                    args: argparse.Namespace) -> None:
    """Section (2): every setting in every precision, and the pure step it is compared with."""
    # One setting at a time, with only its own model alive, as training runs: interleaving the settings makes
    # the allocator return and re-fault the large buffers of the 2B-image steps, which training does not see.
    # Each setting is timed in --rounds rounds and keeps its fastest median: the machine's noise only ever adds.
    rows = []
    for precision in precisions:
        cfgs = [replace(base, method=method, equal_compute=equal, precision=precision) for method, equal in SETTINGS]
        sizes = sorted({step_images(cfg) for cfg in cfgs})
        seconds = {id(cfg): float("inf") for cfg in cfgs}
        pure = dict.fromkeys(sizes, float("inf"))
        for _ in range(args.rounds):
            for cfg in cfgs:
                teacher = (build_model(cfg.model, dataset.channels, dataset.num_classes).to(device).eval()
                           if METHODS[cfg.method].needs_teacher else None)  # kd: an untrained teacher, same model
                session = build_session(cfg, dataset, device, teacher=teacher)
                seconds[id(cfg)] = min(seconds[id(cfg)], _median(lambda s=session: train_step(s), device, args))
                del session  # before the next setting builds its model
            for size in sizes:
                pure[size] = min(pure[size], _median(_pure_step(cfgs[0], dataset, device, size), device, args))
        ce = seconds[id(cfgs[0])]
        for cfg in cfgs:
            s = seconds[id(cfg)]
            rows.append((cfg.method + (" --equal-compute" if cfg.equal_compute else ""),
                         resolve_precision(precision, device), 1e3 * s, step_images(cfg) / s, s / ce,
                         pure[step_images(cfg)] / s))
    print(f"  {'method':<22}{'precision':>10}{'step ms':>10}{'images/s':>10}{'x CE':>7}{'pipeline eff.':>15}")
    for label, precision, ms, speed, ratio, efficiency in rows:
        print(f"  {label:<22}{precision:>10}{ms:10.2f}{speed:10.0f}{ratio:7.2f}{efficiency:15.2f}")


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        channels, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-shape must be CxHxW, e.g. 3x32x32; got {text!r}") from None
    if min(channels, h, w) < 1:
        raise argparse.ArgumentTypeError(f"--image-shape needs positive sizes; got {text!r}")
    return channels, h, w


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k", help="a named dataset (ignored with --image-shape)")
    parser.add_argument("--image-shape", type=_parse_shape, help="CxHxW: synthetic tensors of this shape instead")
    parser.add_argument("--classes", type=int, default=10, help="classes of the synthetic tensors")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", type=_parse_list, default=["auto"],
                        help="comma-separated precisions of section (2): auto, fp32, bf16, fp16")
    parser.add_argument("--patch-sizes", type=_parse_list, default=[],
                        help="comma-separated patch sizes of section (1) (default: the images' default)")
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed training steps per setting and round (x10 for the augmentation)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps before each timing")
    parser.add_argument("--rounds", type=int, default=3, help="timings per figure; the fastest is kept")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of torch (default: torch's choice); 1 steadies figures on a shared machine")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steady = steady_allocator()
    if args.image_shape:
        dataset = synthetic_dataset(args.image_shape, args.classes, args.batch_size).to(device)
    else:
        dataset = load_dataset(args.dataset).to(device)
    try:
        patch_sizes = [check_patch_size(int(p), dataset.image_size) for p in args.patch_sizes] \
            or [default_patch_size(dataset.image_size)]
        for precision in args.precision:
            resolve_precision(precision, device)
    except ValueError as exc:
        parser.error(str(exc))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    allocator = "; glibc keeps freed memory" if steady else ""
    print(f"explorer.bench: {dataset.name}, {args.model}, batch {args.batch_size}, device {device} ({name}), "
          f"torch {torch.__version__}; fastest of {args.rounds} medians{allocator}")

    print("\n(1) augmentation of one batch: partners + gather + patch_swap beside torchvision v2.CutMix")
    for label, all_images in (("uint8 (as training swaps)", dataset.train_images),
                              ("float32 (normalised)", dataset.normalize(dataset.train_images))):
        for patch_size in patch_sizes:
            swap_s, cutmix_s = _augmentation(dataset, all_images, device, args.batch_size, patch_size, args.repeats,
                                             args.rounds)
            print(f"  {label:<26} {patch_size:2d} px  IPS pairs {1e6 * swap_s:8.1f} us   "
                  f"CutMix {1e6 * cutmix_s:8.1f} us   ratio {swap_s / cutmix_s:4.2f} x")

    print(f"\n(2) one training step at {args.batch_size} anchors: time, images/s, ratio to CE, pipeline efficiency")
    base = TrainConfig(dataset=dataset.name, model=args.model, batch_size=args.batch_size, lr=0.01, epochs=1000,
                       run_id="bench")
    _training_steps(base, dataset, device, args.precision, args)
    return 0
