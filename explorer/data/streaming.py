"""Image-file datasets bigger than memory: streamed from disk, batch by batch, with same-class pairs.

**When.** ``explorer.data.open_dataset(..., data_mode=)`` returns an in-memory ``Dataset`` (``load_dataset``) or a
``StreamedDataset``. ``"memory"`` and ``"stream"`` force the choice; ``"auto"`` (default) streams when loading in
memory would exceed the memory budget: ``MEMORY_FRACTION`` of the memory still available (``/proc/meminfo``
MemAvailable, lowered by a cgroup limit), or ``memory_budget`` bytes when given. Loading needs the decoded uint8
images, (train + test) x C x H x W bytes, times the loader's peak factor (``LOAD_PEAK``, measured): an image folder
holds a list of decoded images, then the stacked copy, then float32 copies for its statistics (8.5x on 20,000
32 px images); Tiny-ImageNet is decoded into preallocated tensors (1.3x). Only image-file datasets stream
(``imagefolder:PATH``, ``tinyimagenet``); mnist5k, digits and CIFAR come whole from their archives.

**How.** ``PairBatchSampler`` draws each global batch of anchor indices and their same-class partners in the main
process; ``DataLoader`` workers decode one file per index to uint8 [3, H, W] (``read_image``, the in-memory
decoder, so both paths give the same bytes) and collate a ``PairBatch``; ``BatchStream`` moves it to the device
(pinned memory and ``non_blocking`` copies on CUDA; persistent workers and ``prefetch_factor`` batches per worker
in flight). Augmentation, the patch swap and normalisation stay on the device, done by the training loop exactly as
for in-memory data. Normalisation statistics come from a fixed sample of ``STATS_IMAGES`` training images (all of
them when there are fewer), counted exactly in integers.

**Pairs, compared with the in-memory path.** In memory, the loop draws anchors from ``AnchorStream`` (one
permutation after another on the device generator, fixed-size steps across permutation boundaries) and partners
with ``same_class_partners`` on that same generator, interleaved with the augmentation draws. A streamed epoch is
one permutation of the training set cut into ``ceil(N / batch_size)`` batches whose sizes differ by at most one,
and its partners are ``same_class_partners`` of that permutation, both drawn on a CPU generator seeded by
``(seed, epoch)`` alone. So the pairs have the same distribution (every image an anchor once per epoch, partners
uniform over the other images of the class) but not the same values as an in-memory run with the same seed; the
in-memory path and its generator are untouched. Under torchrun every rank draws the same global batches and reads
only its contiguous shard of each (``torch.tensor_split`` over ``world_size``): the shards are disjoint and cover
the global batch, as the in-memory loop's shard slices do. Since an epoch's batches follow from (seed, epoch), a
``BatchStream``'s position is all a resumed run needs (``BatchStream.seek``). The training loop's use of all this:
``explorer.training.streamed``.

**Bad files.** A file that cannot be decoded does not stop an epoch: its worker returns no image, the collate drops
the pairs it is in, and ``BatchStream`` counts it (``skipped``) and warns once. Layout errors (a class with fewer
than 2 training images, a missing Tiny-ImageNet file) are ``DatasetError``s before anything is read.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from explorer.data.base import (
    MIN_STD,
    SPLIT_SEED,
    UNREADABLE_ERRORS,
    ImageFiles,
    normalize_images,
    read_image,
    stratified_split,
)
from explorer.ips import ClassIndex, build_class_index, same_class_partners

__all__ = ["STATS_IMAGES", "BatchStream", "ImageBatch", "PairBatch", "PairBatchSampler", "StreamedDataset",
           "channel_stats", "decode_all", "default_workers", "derived_seed", "image_loader", "pair_loader",
           "sampled_stats"]

STATS_IMAGES = 10_000


@dataclass(frozen=True)
class StreamedDataset:
    """An image-file dataset read batch by batch: a ``Dataset``'s description with file lists for its tensors.

    ``name``, ``class_names``, ``num_classes``, ``channels``, ``image_size``, ``mean``, ``std``, ``crop_padding``,
    ``flip`` and ``normalize`` mean what they mean on ``Dataset``, so model building, checkpoint cards and
    ``predict_logits`` take either.
    """

    name: str
    train: ImageFiles
    test: ImageFiles
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return 3  # read_image decodes every file as RGB

    @property
    def train_labels(self) -> Tensor:
        """The training split's labels, as on ``Dataset`` (the loop counts its steps and classes from them)."""
        return self.train.labels

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, standardised with the training split's statistics."""
        return normalize_images(images, self.mean, self.std)

    def holdout(self, fraction: float = 0.2, num_workers: int | None = None) -> StreamedDataset:
        """Train on the rest of the training split, test on ``fraction`` of it (per class, ``SPLIT_SEED``), like
        ``Dataset.holdout``; the statistics are those of the remaining training images."""
        keep, held = stratified_split(self.train.labels.numpy(), fraction)
        train = self.train.subset(keep)
        mean, std = sampled_stats(train, self.image_size, num_workers)
        return replace(self, name=f"{self.name}[holdout]", train=train, test=self.train.subset(held), mean=mean,
                       std=std)


def channel_stats(batches: Iterable[Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (unbiased, at least ``MIN_STD``) in [0, 1] units of uint8 batches [B, C, H, W].

    Sums are exact Python integers, one batch at a time: the memory peak is one batch, whatever the dataset.
    """
    count, sums, squares = 0, None, None
    for images in batches:
        pixels = images.long()
        batch_sums = pixels.sum(dim=(0, 2, 3)).tolist()
        batch_squares = pixels.square().sum(dim=(0, 2, 3)).tolist()
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
        squares = batch_squares if squares is None else [a + b for a, b in zip(squares, batch_squares, strict=True)]
        count += images.shape[0] * images.shape[2] * images.shape[3]
    if count < 2:
        raise ValueError("channel_stats needs at least 2 pixels")
    mean = tuple(s / count / 255.0 for s in sums)
    std = tuple(max(math.sqrt((count * q - s * s) / (count * (count - 1))) / 255.0, MIN_STD)
                for s, q in zip(sums, squares, strict=True))
    return mean, std


def default_workers(processes: int = 1) -> int:
    """DataLoader workers when none are asked for: one per CPU this process may use, at most 8. ``processes``
    (torchrun's processes on this machine) share the CPUs, at least one worker each."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus // max(1, processes)))


def sampled_stats(files: ImageFiles, image_size: tuple[int, int],
                   num_workers: int | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``channel_stats`` of ``STATS_IMAGES`` training images drawn with ``SPLIT_SEED`` (all, when fewer)."""
    sample = files
    if len(files) > STATS_IMAGES:
        sample = files.subset(np.sort(np.random.default_rng(SPLIT_SEED).choice(len(files), STATS_IMAGES,
                                                                                replace=False)))
    # unreadable files are left out silently here: training meets them again, and warns then
    return channel_stats(batch.images for batch in image_loader(sample, image_size, 256, num_workers))


def decode_all(files: ImageFiles, image_size: tuple[int, int], num_workers: int | None) -> tuple[Tensor, Tensor]:
    """Every readable image of ``files`` as one uint8 tensor, and their labels (unreadable files left out)."""
    images = torch.empty((len(files), 3, *image_size), dtype=torch.uint8)
    labels = torch.empty(len(files), dtype=torch.long)
    filled = 0
    for batch in BatchStream(image_loader(files, image_size, 256, num_workers), torch.device("cpu")).epoch():
        images[filled:filled + len(batch.labels)] = batch.images
        labels[filled:filled + len(batch.labels)] = batch.labels
        filled += len(batch.labels)
    if filled == len(files):
        return images, labels
    return images[:filled].clone(), labels[:filled].clone()


class ImageBatch(NamedTuple):
    """Readable images of one batch, in order (test split, CE training, statistics)."""

    images: Tensor  # uint8 [B, 3, H, W]
    labels: Tensor  # long [B]
    indices: Tensor  # long [B], their indices in the split's ImageFiles
    unreadable: Tensor  # long [U], indices of the batch's files that could not be decoded (left out)


class PairBatch(NamedTuple):
    """Same-class pairs of one batch (this rank's shard): ``anchor_images[i]`` and ``partner_images[i]`` share
    ``labels[i]``. A pair with an unreadable image is left out."""

    anchor_images: Tensor  # uint8 [B, 3, H, W]
    partner_images: Tensor  # uint8 [B, 3, H, W]
    labels: Tensor  # long [B]
    anchors: Tensor  # long [B], training-split indices
    partners: Tensor  # long [B]
    unreadable: Tensor  # long [U], indices of the batch's files that could not be decoded


class _FileReader(torch.utils.data.Dataset):
    """Decodes one file per index, in a worker; an unreadable file gives ``None`` instead of ending the epoch."""

    def __init__(self, files: ImageFiles, image_size: tuple[int, int]) -> None:
        self.files, self.image_size = files, image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, int, Tensor | None]:
        try:
            image = read_image(self.files.path(index), self.image_size)
        except UNREADABLE_ERRORS:
            image = None
        return index, int(self.files.labels[index]), image


@dataclass(frozen=True)
class _Collate:
    """Stacks a batch's readable images into an ``ImageBatch``, or, when the indices are anchors followed by as many
    partners, the pairs whose two images were read into a ``PairBatch``."""

    image_shape: tuple[int, int, int]
    pairs: bool

    def __call__(self, items: list[tuple[int, int, Tensor | None]]) -> ImageBatch | PairBatch:
        unreadable = torch.tensor([index for index, _, image in items if image is None], dtype=torch.long)
        if not self.pairs:
            readable = [item for item in items if item[2] is not None]
            return ImageBatch(self._stack([image for _, _, image in readable]), *self._columns(readable), unreadable)
        half = len(items) // 2
        kept = [(a, p) for a, p in zip(items[:half], items[half:], strict=True)
                if a[2] is not None and p[2] is not None]
        anchors, partners = [a for a, _ in kept], [p for _, p in kept]
        anchor_labels, anchor_indices = self._columns(anchors)
        return PairBatch(self._stack([image for _, _, image in anchors]),
                         self._stack([image for _, _, image in partners]), anchor_labels, anchor_indices,
                         self._columns(partners)[1], unreadable)

    def _stack(self, images: list[Tensor]) -> Tensor:
        return torch.stack(images) if images else torch.empty((0, *self.image_shape), dtype=torch.uint8)

    @staticmethod
    def _columns(items: list[tuple[int, int, Tensor | None]]) -> tuple[Tensor, Tensor]:
        """(labels, indices) of ``items``."""
        return (torch.tensor([label for _, label, _ in items], dtype=torch.long),
                torch.tensor([index for index, _, _ in items], dtype=torch.long))


class PairBatchSampler(Sampler[list[int]]):
    """Batches of anchors + same-class partners for a DataLoader, one permutation of the training set per epoch.

    Epoch ``e`` (``set_epoch``) is fixed by ``(seed, e)`` alone, so a position (epoch, batch) is all the state a resumed
    run needs: ``randperm(N)`` cut into ``len(self)`` =
    ``ceil(N / batch_size)`` consecutive batches whose sizes differ by at most one (so no tiny last batch upsets
    BatchNorm), each anchor's partner from ``same_class_partners`` (never the anchor itself when its class has 2 or
    more images). Every rank of a torchrun job draws the same batches and yields its own contiguous shard: the
    shard's anchor indices followed by their partners (only the anchors with ``with_partners=False``).
    """

    def __init__(self, class_index: ClassIndex, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 with_partners: bool = True) -> None:
        self.class_index = class_index.to("cpu")
        size = int(class_index.labels.numel())
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank {rank} of {world_size}")
        batches = math.ceil(size / batch_size)
        if size // batches < world_size:
            raise ValueError(f"{size} training images in batches of at most {batch_size} give some batch only "
                             f"{size // batches} anchors, fewer than the {world_size} processes that share it")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.with_partners = with_partners
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch whose batches ``__iter__`` yields, from its batch ``start`` on (every rank the same)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return math.ceil(int(self.class_index.labels.numel()) / self.batch_size)

    def global_batches(self) -> list[tuple[Tensor, Tensor]]:
        """This epoch's (anchors, partners) of every global batch, before sharding over ranks."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        anchors = torch.randperm(int(self.class_index.labels.numel()), generator=generator)
        partners = same_class_partners(anchors, self.class_index, generator)
        return list(zip(anchors.tensor_split(len(self)), partners.tensor_split(len(self)), strict=True))

    def __iter__(self) -> Iterator[list[int]]:
        for anchors, partners in self.global_batches()[self.start:]:
            shard = anchors.tensor_split(self.world_size)[self.rank]
            if self.with_partners:
                shard = torch.cat([shard, partners.tensor_split(self.world_size)[self.rank]])
            yield shard.tolist()


def derived_seed(seed: int, key: int) -> int:
    """A 64-bit seed for each (seed, key), e.g. (seed, epoch) or (seed, rank), without the collisions of
    ``seed + key``."""
    return int(np.random.SeedSequence([seed % 2**64, key]).generate_state(1, np.uint64)[0])


def pair_loader(data: StreamedDataset, batch_size: int, seed: int = 0, *, with_partners: bool = True, rank: int = 0,
                world_size: int = 1, num_workers: int | None = None, device: torch.device | str = "cpu",
                prefetch_factor: int = 4) -> DataLoader:
    """Training batches: ``PairBatch``es of ``batch_size`` global anchors (this rank's shard), or ``ImageBatch``es
    of anchors alone with ``with_partners=False`` (plain cross-entropy needs no partners)."""
    sampler = PairBatchSampler(build_class_index(data.train.labels, data.num_classes), batch_size, seed, rank,
                               world_size, with_partners)
    return _loader(data.train, data.image_size, sampler, with_partners, num_workers, device, prefetch_factor)


def image_loader(files: ImageFiles, image_size: tuple[int, int], batch_size: int, num_workers: int | None = None,
                 device: torch.device | str = "cpu", prefetch_factor: int = 4) -> DataLoader:
    """``ImageBatch``es of ``files`` in order (the test split, statistics, loading whole into memory)."""
    batches = BatchSampler(SequentialSampler(range(len(files))), batch_size, drop_last=False)
    return _loader(files, image_size, batches, False, num_workers, device, prefetch_factor)


def _loader(files: ImageFiles, image_size: tuple[int, int], batch_sampler: Sampler[list[int]], pairs: bool,
            num_workers: int | None, device: torch.device | str, prefetch_factor: int) -> DataLoader:
    workers = default_workers() if num_workers is None else num_workers
    return DataLoader(_FileReader(files, image_size), batch_sampler=batch_sampler, num_workers=workers,
                      collate_fn=_Collate((3, *image_size), pairs), pin_memory=torch.device(device).type == "cuda",
                      persistent_workers=workers > 0, prefetch_factor=prefetch_factor if workers > 0 else None)


class BatchStream:
    """A loader's batches on the training device: ``next()`` forever (the streamed ``AnchorStream``), ``epoch()``
    for one pass. Each pass sets the pair sampler's next epoch; ``seek`` continues a resumed run where it stopped.
    Unreadable files are counted in ``skipped`` and named in one warning, the first time one turns up."""

    def __init__(self, loader: DataLoader, device: torch.device | str) -> None:
        self.loader, self.device = loader, torch.device(device)
        self.epochs_started, self.start = 0, 0
        self.unreadable: set[int] = set()
        self._current: Iterator[ImageBatch | PairBatch] | None = None

    @property
    def skipped(self) -> int:
        """How many different files could not be decoded so far."""
        return len(self.unreadable)

    def seek(self, batches: int) -> None:
        """Continue as if ``next()`` had been called ``batches`` times: the pair sampler's epochs depend on
        (seed, epoch) alone, so the position is the whole state (a batch left out whole, see ``next``, aside)."""
        self.epochs_started, self.start = divmod(batches, len(self.loader.batch_sampler))
        self._current = None

    def epoch(self) -> Iterator[ImageBatch | PairBatch]:
        """One pass over the loader (the rest of it after ``seek``), batches on the device."""
        if isinstance(self.loader.batch_sampler, PairBatchSampler):
            self.loader.batch_sampler.set_epoch(self.epochs_started, self.start)
        self.epochs_started, self.start = self.epochs_started + 1, 0
        for batch in self.loader:
            self._count_unreadable(batch.unreadable)
            yield batch._replace(**{name: getattr(batch, name).to(self.device, non_blocking=True)
                                    for name in batch._fields if name != "unreadable"})

    def next(self) -> ImageBatch | PairBatch:
        """The next batch with at least one image (one whose every file is unreadable is passed over), starting
        the sampler's next epoch when one ends."""
        for _ in range(2 * len(self.loader) + 1):  # at least one whole pass
            batch = None if self._current is None else next(self._current, None)
            if batch is None:
                self._current = self.epoch()
                batch = next(self._current, None)
            if batch is not None and len(batch.labels):
                return batch
        raise ValueError(f"no image of the {len(self.loader.dataset)} files could be read: the loader yields no "
                         f"batch with an image")

    def _count_unreadable(self, indices: Tensor) -> None:
        new = set(indices.tolist()) - self.unreadable
        if new and not self.unreadable:
            warnings.warn(f"skipped unreadable image {self.loader.dataset.files.path(min(new))}; the pairs of every "
                          f"unreadable image are left out, and later ones are counted, not named",
                          RuntimeWarning, stacklevel=3)
        self.unreadable |= new
