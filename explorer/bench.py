"""Benchmark of the core: ``python -m explorer.bench [--device auto] [--batch-size 128] [--repeats 30]``.

In one process, with the default model and dataset, medians of repeated timings of:

1. same-class partner sampling + gathering the partners + ``patch_swap`` on one batch, beside
   ``torchvision.transforms.v2.CutMix`` on the same batch (the cheapest well-known batch augmentation);
2. one training step (augmentation, forward, backward, SGD update) of IPS and CS-KD over one of CE at the same
   anchor batch, with and without ``--equal-compute``;
3. training images per second of every method.

Timings on CUDA synchronise the device around each repeat. Every measured step is the training CLI's own
``method_loss``, so the benchmark measures what training runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from explorer.data import load_dataset
from explorer.device import resolve_device
from explorer.ips import build_class_index, patch_swap, same_class_partners
from explorer.models import build_model
from explorer.train import AnchorStream, TrainConfig, default_patch_size, method_loss

__all__ = ["median_seconds", "main"]


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 5) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _augmentation(dataset, device: torch.device, batch_size: int, repeats: int) -> tuple[float, float]:
    images = dataset.normalize(dataset.train_images[:batch_size])
    labels = dataset.train_labels[:batch_size]
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    anchors = torch.arange(batch_size, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    all_images = dataset.normalize(dataset.train_images)
    patch_size = default_patch_size(dataset.image_size)
    cutmix = v2.CutMix(num_classes=dataset.num_classes)

    def ips_pairs() -> None:
        partners = same_class_partners(anchors, class_index, generator)
        patch_swap(images, all_images[partners], patch_size, 0.5, 1.0, generator)

    return (median_seconds(ips_pairs, repeats * 10, device),
            median_seconds(lambda: cutmix(images, labels), repeats * 10, device))


def _step_seconds(cfg: TrainConfig, dataset, device: torch.device, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    class_index = build_class_index(dataset.train_labels, dataset.num_classes)
    generator = torch.Generator(device=device).manual_seed(0)
    stream = AnchorStream(len(dataset.train_labels), generator, device)
    anchors_per_step = cfg.batch_size // 2 if (cfg.equal_compute and cfg.method != "ce") else cfg.batch_size
    patch_size = default_patch_size(dataset.image_size)

    def step() -> None:
        loss, *_ = method_loss(cfg, model, dataset, stream.next(anchors_per_step), class_index, patch_size,
                               generator, slice(None))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return median_seconds(step, repeats, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="timed training steps per setting (x10 for swaps)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"explorer.bench: {args.dataset}, {args.model}, batch {args.batch_size}, device {device} ({name}), "
          f"torch {torch.__version__}; medians")

    swap_s, cutmix_s = _augmentation(dataset, device, args.batch_size, args.repeats)
    print("\n(1) augmentation of one batch")
    print(f"  partners + gather + patch_swap   {1e6 * swap_s:9.1f} us")
    print(f"  torchvision v2.CutMix            {1e6 * cutmix_s:9.1f} us")
    print(f"  ratio                            {swap_s / cutmix_s:9.2f} x")

    base = TrainConfig(dataset=args.dataset, model=args.model, batch_size=args.batch_size)
    settings = [("ce", False), ("cskd", False), ("ips", False), ("cskd", True), ("ips", True)]
    seconds = {}
    for method, equal in settings:
        cfg = TrainConfig(**{**base.__dict__, "method": method, "equal_compute": equal})
        seconds[(method, equal)] = _step_seconds(cfg, dataset, device, args.repeats)
    ce = seconds[("ce", False)]
    print(f"\n(2) one training step at {args.batch_size} anchors (3) training throughput")
    print(f"  {'method':<22}{'step ms':>10}{'x CE step':>11}{'images/s':>11}")
    for (method, equal), s in seconds.items():
        images = args.batch_size * (2 if method != "ce" and not equal else 1)
        label = method + (" --equal-compute" if equal else "")
        print(f"  {label:<22}{1e3 * s:10.2f}{s / ce:11.2f}{images / s:11.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
