"""Benchmark of streamed against in-memory data: ``python -m explorer.streaming_bench [--sizes 2000 20000]``.

Writes image folders of ``--sizes`` random-noise PNGs (``--classes`` classes, ``--image-size`` px; 80 % of them
become the training split) into a temporary folder, then measures each folder streamed (``--workers`` DataLoader
workers) and in memory, each in a fresh subprocess so that its peak resident memory is its own, ``--repeats`` times
in alternation (stream, memory, stream, memory, ...), keeping the best figures: a shared machine's noise only ever
adds time and memory.

- setup: streamed, listing the files + the statistics sample; in memory, ``load_dataset`` decoding every image;
- read: one epoch of same-class pairs (``PairBatchSampler``), images only: streamed through the workers, in memory
  by ``index_select`` from the loaded tensors;
- train: the first ``--train-batches`` batches of the next epoch, each through one IPS step (augmentation, patch
  swap, normalisation, forward, backward, SGD update of ``small_cnn``), the same code for both.

Reported: images/s of read and train (two images per pair), the streamed / in-memory train ratio, and peak RSS of
the main process (after reading, and overall) and of the largest worker. Streamed memory should not grow with the
folder; in-memory memory does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from explorer.data import Dataset, augment, load_dataset, open_dataset
from explorer.data.streaming import BatchStream, PairBatchSampler, StreamedDataset, pair_loader
from explorer.ips import build_class_index, default_patch_size, ips_loss, patch_swap
from explorer.models import build_model

__all__ = ["main", "measure", "write_folder"]


def write_folder(root: Path, images: int, classes: int, image_size: int, seed: int = 0) -> Path:
    """``images`` random-noise PNGs of ``image_size`` px in ImageFolder layout, split over ``classes`` folders."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        (root / f"class{label:03d}").mkdir(parents=True)
    for i in range(images):
        pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"class{i % classes:03d}" / f"{i:06d}.png", compress_level=1)
    return root


def _peak_rss_mb(who: int) -> float:
    """Peak resident memory in MiB of this process (RUSAGE_SELF) or of its largest reaped child (RUSAGE_CHILDREN)."""
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def measure(folder: Path, mode: str, image_size: int, batch_size: int, workers: int,
            train_batches: int) -> dict[str, float]:
    """Setup, read and train figures of one folder in one mode (``"stream"`` or ``"memory"``), in this process."""
    name = f"imagefolder:{folder}"
    start = time.perf_counter()
    if mode == "stream":
        data = open_dataset(name, image_size=image_size, data_mode="stream", num_workers=workers)
        labels = data.train.labels
    else:
        data = load_dataset(name, image_size=image_size)
        labels = data.train_labels
    setup_s = time.perf_counter() - start

    if isinstance(data, StreamedDataset):
        stream = BatchStream(pair_loader(data, batch_size, seed=0, num_workers=workers), "cpu")
        epoch_of_pairs = stream.epoch
    else:
        sampler = PairBatchSampler(build_class_index(labels, data.num_classes), batch_size, seed=0)

        def epoch_of_pairs():  # the streamed epochs' pairs, gathered from memory
            for anchors, partners in sampler.global_batches():
                yield (data.train_images.index_select(0, anchors), data.train_images.index_select(0, partners),
                       labels.index_select(0, anchors))
            sampler.set_epoch(sampler.epoch + 1)

    def pairs():  # (anchor images, partner images, labels) of one epoch
        for batch in epoch_of_pairs():
            yield batch[:3]

    start, read = time.perf_counter(), 0
    for anchor_images, partner_images, _ in pairs():
        read += len(anchor_images) + len(partner_images)
    read_s = time.perf_counter() - start

    result = {"train_images": len(labels), "setup_s": setup_s, "read_images_per_s": read / read_s,
              "read_peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF)}
    if train_batches:
        result["train_images_per_s"] = _train_images_per_s(data, pairs(), train_batches)
    if isinstance(data, StreamedDataset):
        del stream  # shuts the persistent workers down, so that RUSAGE_CHILDREN includes them
        gc.collect()
    result["peak_rss_mb"] = _peak_rss_mb(resource.RUSAGE_SELF)
    result["worker_peak_rss_mb"] = _peak_rss_mb(resource.RUSAGE_CHILDREN)
    return result


def _train_images_per_s(data: Dataset | StreamedDataset, pairs: Iterator[tuple[Tensor, Tensor, Tensor]],
                        batches: int) -> float:
    """Training images per second of ``batches`` IPS steps of small_cnn on ``pairs`` (one epoch's batches)."""
    torch.manual_seed(0)
    model = build_model("small_cnn", data.channels, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    patch_size = default_patch_size(data.image_size)
    start, trained = time.perf_counter(), 0
    for step, (anchor_images, partner_images, targets) in enumerate(pairs):
        if step == batches:
            break
        x_a = augment(anchor_images, data.crop_padding, data.flip, generator)
        x_b = augment(partner_images, data.crop_padding, data.flip, generator)
        x_a, x_b, _ = patch_swap(x_a, x_b, patch_size, generator=generator)
        logits_a, logits_b = model(data.normalize(torch.cat([x_a, x_b]))).chunk(2)
        loss = ips_loss(logits_a, logits_b, targets).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        trained += 2 * len(targets)
    return trained / (time.perf_counter() - start)


def _measure_in_subprocess(folder: Path, mode: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "explorer.streaming_bench", "--measure", mode, "--folder", str(folder),
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--train-batches", str(args.train_batches),
               "--threads", str(args.threads)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fastest(results: list[dict[str, float]]) -> dict[str, float]:
    """The best of repeated measurements: the shortest setup, the highest rates, the least memory (the allocator
    adds noise too: identical training runs peaked 995 to 1066 MiB)."""
    return {key: (max if key.endswith("per_s") else min)(r[key] for r in results) for key in results[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.streaming_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="images per generated folder")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128, help="anchors per batch (2x images)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streamed path")
    parser.add_argument("--train-batches", type=int, default=40, help="IPS training steps timed (0: read only)")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per folder and mode; the fastest kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the measured process (0: torch's)")
    parser.add_argument("--measure", choices=("stream", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # the child: one folder, one mode, one JSON line
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.folder, args.measure, args.image_size, args.batch_size, args.workers,
                                 args.train_batches)))
        return 0

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads or torch.get_num_threads()} torch threads, "
          f"{args.workers} workers, batch {args.batch_size} pairs, "
          f"{args.image_size}px PNGs, {args.classes} classes, {args.train_batches} small_cnn IPS steps, "
          f"fastest of {args.repeats}")
    header = (f"{'folder':>7} {'train':>6} {'mode':>6} {'setup s':>8} {'read img/s':>11} {'train img/s':>12} "
              f"{'RSS after read':>15} {'peak RSS':>9} {'worker RSS':>11}   (RSS: peak MiB)")
    print(header)
    results: dict[tuple[int, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="streaming_bench-") as tmp:
        for size in args.sizes:
            folder = write_folder(Path(tmp) / f"n{size}", size, args.classes, args.image_size)
            runs = [(mode, _measure_in_subprocess(folder, mode, args))
                    for _ in range(args.repeats) for mode in ("stream", "memory")]
            for mode in ("stream", "memory"):
                r = results[size, mode] = _fastest([result for m, result in runs if m == mode])
                workers_rss = f"{r['worker_peak_rss_mb']:11.0f}" if mode == "stream" else f"{'-':>11}"
                print(f"{size:7d} {r['train_images']:6d} {mode:>6} {r['setup_s']:8.2f} {r['read_images_per_s']:11.0f} "
                      f"{r.get('train_images_per_s', float('nan')):12.0f} {r['read_peak_rss_mb']:15.0f} "
                      f"{r['peak_rss_mb']:9.0f} {workers_rss}", flush=True)
    for size in args.sizes:
        if args.train_batches:
            ratio = results[size, "stream"]["train_images_per_s"] / results[size, "memory"]["train_images_per_s"]
            print(f"{size} images: streamed / in-memory training throughput {ratio:.2f}x")
    for mode in ("stream", "memory"):
        for key, what in (("read_peak_rss_mb", "after reading"), ("peak_rss_mb", "overall")):
            peaks = [results[size, mode][key] for size in args.sizes]
            print(f"{mode} peak RSS {what}, per folder: {' / '.join(f'{p:.0f}' for p in peaks)} MiB, "
                  f"largest / smallest {max(peaks) / min(peaks):.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
