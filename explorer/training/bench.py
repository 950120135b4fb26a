"""Benchmark of the core: ``python -m explorer.bench [--device auto] [--batch-size 128] [--repeats 30]``.

In one process, with the default model and dataset, the fastest of three medians of repeated timings (the
augmentation candidates timed round-robin, so that a shared machine's drifts hit both alike) of:

1. same-class partner sampling + gathering the partners + ``patch_swap`` on one batch, beside
   ``torchvision.transforms.v2.CutMix`` on the same batch (the cheapest well-known batch augmentation), both on
   the uint8 images that training swaps and on normalised float32 images;
2. one training step (augmentation, forward, backward, SGD update) of IPS and CS-KD over one of CE at the same
   anchor batch, with and without ``--equal-compute``;
3. training images per second of every method.

Timings on CUDA synchronise the device around each repeat. Every measured step is the training CLI's own
``method_loss``, so the benchmark measures what training runs.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torchvision.transforms import v2

from explorer.data import load_dataset
from explorer.device import resolve_device
from explorer.ips import build_class_index, default_patch_size, patch_swap, same_class_partners
from explorer.models import build_model
from explorer.training.config import TrainConfig, step_anchors, step_images
from explorer.training.loop import AnchorStream, method_loss

__all__ = ["interleaved_medians", "main", "steady_allocator"]

ROUNDS = 3  # every figure is the fastest of this many medians: a shared machine's noise only ever adds time


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
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_threshold, 1 << 30))


def _augmentation(dataset, all_images, device: torch.device, batch_size: int, repeats: int) -> tuple[float, float]:
    """(partners + gather + patch_swap, CutMix) seconds on the first ``batch_size`` of ``all_images``."""
    images = all_images[:batch_size]
    labels = dataset.train_labels[:batch_size]
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    anchors = torch.arange(batch_size, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    patch_size = default_patch_size(dataset.image_size)
    cutmix = v2.CutMix(num_classes=dataset.num_classes)

    def ips_pairs() -> None:
        partners = same_class_partners(anchors, class_index, generator)
        patch_swap(images, all_images.index_select(0, partners), patch_size, 0.5, 1.0, generator)

    rounds = [interleaved_medians({"ips": ips_pairs, "cutmix": lambda: cutmix(images, labels)}, repeats * 10, device)
              for _ in range(ROUNDS)]
    return min(r["ips"] for r in rounds), min(r["cutmix"] for r in rounds)


def _training_step(cfg: TrainConfig, dataset, device: torch.device) -> Callable[[], None]:
    """One optimiser step of ``cfg``'s method, exactly as the training loop makes it."""
    torch.manual_seed(0)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    generator = torch.Generator(device=device).manual_seed(0)
    stream = AnchorStream(len(dataset.train_labels), generator, device)
    anchors_per_step = step_anchors(cfg)
    patch_size = default_patch_size(dataset.image_size)

    def step() -> None:
        out = method_loss(cfg, model, dataset, stream.next(anchors_per_step), class_index, patch_size, generator,
                          slice(None))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed training steps per setting and round (x10 for the augmentation)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    steady = steady_allocator()
    dataset = load_dataset(args.dataset).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"explorer.bench: {args.dataset}, {args.model}, batch {args.batch_size}, device {device} ({name}), "
          f"torch {torch.__version__}; medians{'; glibc malloc keeps freed memory' if steady else ''}")

    print("\n(1) augmentation of one batch: partners + gather + patch_swap beside torchvision v2.CutMix")
    for label, all_images in (("uint8 (as training swaps)", dataset.train_images),
                              ("float32 (normalised)", dataset.normalize(dataset.train_images))):
        swap_s, cutmix_s = _augmentation(dataset, all_images, device, args.batch_size, args.repeats)
        print(f"  {label:<26} IPS pairs {1e6 * swap_s:7.1f} us   CutMix {1e6 * cutmix_s:7.1f} us   "
              f"ratio {swap_s / cutmix_s:4.2f} x")

    base = TrainConfig(dataset=args.dataset, model=args.model, batch_size=args.batch_size)
    configs = [replace(base, method=method, equal_compute=equal)
               for method, equal in [("ce", False), ("cskd", False), ("ips", False), ("cskd", True), ("ips", True)]]
    # One setting at a time, with only its own model alive, as training runs: interleaving the settings makes
    # the allocator return and re-fault the large buffers of the 2B-image steps, which training does not see.
    # Each setting is timed in ROUNDS rounds and keeps its fastest median: the machine's noise only ever adds.
    seconds = [float("inf")] * len(configs)
    for _ in range(ROUNDS):
        for i, cfg in enumerate(configs):
            step = _training_step(cfg, dataset, device)
            seconds[i] = min(seconds[i], interleaved_medians({"step": step}, args.repeats, device, warmup=10)["step"])
            del step  # before the next setting builds its model
    print(f"\n(2) one training step at {args.batch_size} anchors (3) training throughput")
    print(f"  {'method':<22}{'step ms':>10}{'x CE step':>11}{'images/s':>11}")
    for cfg, s in zip(configs, seconds, strict=True):
        label = cfg.method + (" --equal-compute" if cfg.equal_compute else "")
        print(f"  {label:<22}{1e3 * s:10.2f}{s / seconds[0]:11.2f}{step_images(cfg) / s:11.0f}")
    return 0
