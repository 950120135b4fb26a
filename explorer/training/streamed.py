"""The training loop's data when it is streamed from disk: each step's pairs and the test split, batch by batch.

A ``StreamedDataset`` (``explorer.data.streaming``; ``--data-mode stream``, or ``auto`` when the images would not fit
the memory budget) gives the loop what an in-memory ``Dataset`` gives it, read by DataLoader workers:

- **A step**: the next batch of ``BatchStream(pair_loader(...))``, this rank's shard of one global batch of
  anchors with their same-class partners from ``PairBatchSampler`` (CE: anchors alone), already on the device.
  ``streamed_method_loss`` then does what ``loop.method_loss`` does in memory: the same ``augment`` on the device,
  the same ``StepBatch`` and method step (patch swap, normalisation, ``ips_loss`` / ``cskd_loss``).
- **The test split**: ``streamed_test_logits``, the model's logits batch by batch through ``image_loader``.

What differs from the in-memory loop, and why:

- *The pairs.* The sampler draws every epoch from ``(seed, epoch)`` alone, on the CPU, before any image is read:
  one permutation of the training set cut into ``ceil(N / anchors per step)`` batches, partners by
  ``same_class_partners`` on the class index. In memory, anchors and partners come from the run's device generator,
  interleaved with the augmentation and patch-swap draws. So for one seed the two modes draw the same kind of pairs
  (every image an anchor once per epoch, partners uniform over the other images of the class), not the same
  values; and streamed IPS, CS-KD and CE runs of one seed see exactly the same anchors (and pairs).
- *Under torchrun.* Each rank reads only its shard of every global batch (the sampler's ``rank`` / ``world_size``)
  and augments and swaps that shard on its own generator, seeded by ``derived_seed(seed, rank)``; in memory every
  rank draws the whole global batch on one shared seed and keeps its slice. The shards are disjoint and cover the
  global batch either way.
- *Resume.* The stream's position is the step count (one batch per step), and the sampler's batches follow from
  (seed, epoch), so a resumed run continues with the batches it would have drawn (``BatchStream.seek``); the
  generator's state is in the training state as for in-memory runs.
- *Unreadable files* are left out with their pairs (a warning names the first; ``unreadable_images`` in the epoch
  records counts them); in memory, a file that cannot be decoded stops the loading with an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from explorer.data import augment
from explorer.data.streaming import (
    BatchStream,
    ImageBatch,
    PairBatch,
    StreamedDataset,
    default_workers,
    derived_seed,
    image_loader,
    pair_loader,
)
from explorer.evaluate import predict_logits
from explorer.training.config import TrainConfig, step_anchors, step_images
from explorer.training.methods import METHODS, MethodContext, StepBatch, StepOutput

__all__ = ["DataStreams", "open_streams", "streamed_method_loss", "streamed_test_logits"]


@dataclass
class DataStreams:
    """The batches of a streamed run on one rank."""

    train: BatchStream  # this rank's shard of each global batch of pairs (CE: of anchors)
    test: BatchStream  # the test split in order
    seed: int  # of this rank's generator: derived_seed(seed, rank)

    @property
    def unreadable(self) -> int:
        """Files left out so far because they could not be decoded (train and test)."""
        return self.train.skipped + self.test.skipped


def open_streams(cfg: TrainConfig, dataset: StreamedDataset, device: torch.device, rank: int = 0, world: int = 1,
                 local_world: int = 1) -> DataStreams:
    """The loaders of ``cfg``'s run on rank ``rank`` of ``world``; ``local_world`` processes of this machine share
    its CPUs for their DataLoader workers. Workers start at the first batch, not here."""
    workers = default_workers(local_world)
    pairs = METHODS[cfg.method].partners == 1
    train = pair_loader(dataset, step_anchors(cfg), cfg.seed, with_partners=pairs, rank=rank, world_size=world,
                        num_workers=workers, device=device)
    test = image_loader(dataset.test, dataset.image_size, step_images(cfg), num_workers=workers, device=device)
    return DataStreams(BatchStream(train, device), BatchStream(test, device), derived_seed(cfg.seed, rank))


def streamed_method_loss(cfg: TrainConfig, forward: Callable[[Tensor], Tensor], dataset: StreamedDataset,
                         batch: PairBatch | ImageBatch, patch_size: int, generator: torch.Generator,
                         context: MethodContext | None = None) -> StepOutput:
    """One step of ``cfg``'s method on a streamed batch (this rank's shard, its pairs drawn by the sampler): augment
    the anchors, then the partners, then the method's own draws, all on ``generator``, as ``loop.method_loss``."""
    method = METHODS[cfg.method]
    anchors = batch.anchor_images if isinstance(batch, PairBatch) else batch.images
    x_a = augment(anchors, dataset.crop_padding, dataset.flip, generator)
    x_b = None
    if method.partners == 1:
        x_b = augment(batch.partner_images, dataset.crop_padding, dataset.flip, generator)
    indices = batch.anchors if isinstance(batch, PairBatch) else batch.indices
    return method.step(StepBatch(anchors=x_a, partners=x_b, targets=batch.labels, shard=slice(None), forward=forward,
                                 cfg=cfg, patch_size=patch_size, generator=generator, raw=anchors, indices=indices,
                                 augment=partial(augment, padding=dataset.crop_padding, flip=dataset.flip,
                                                 generator=generator),
                                 context=context or MethodContext()))


def streamed_test_logits(model: nn.Module, dataset: StreamedDataset, test: BatchStream) -> tuple[Tensor, Tensor]:
    """The model's logits on every readable test image, and their labels, one loader batch at a time."""
    logits, labels = [], []
    for batch in test.epoch():
        logits.append(predict_logits(model, dataset, batch.images))
        labels.append(batch.labels)
    if not labels:
        raise ValueError(f"no test image of {dataset.name} could be read")
    return torch.cat(logits), torch.cat(labels)
