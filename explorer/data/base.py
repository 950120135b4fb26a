"""What every dataset is made of: the ``Dataset`` of uint8 tensors, image files and their decoder, the per-class
split, normalisation and the batched on-device augmentation training uses (no DataLoader, no loop over samples).

Random crops pad with black; horizontal flips are used for natural images (CIFAR, image folders, Tiny-ImageNet)
and never for digits. Normalisation statistics are the per-channel mean and std of the training split.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "MIN_STD", "SPLIT_SEED", "UNREADABLE_ERRORS", "Dataset", "DatasetError", "ImageFiles",
           "augment", "check_class_sizes", "make_dataset", "natural_crop_padding", "normalize_images", "read_image",
           "stratified_split"]

SPLIT_SEED = 0
MIN_STD = 1e-3  # normalisation never divides by less: a constant channel stays finite
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# what PIL raises for a truncated, corrupt or foreign file, or one whose header claims too many pixels
UNREADABLE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
MAX_IMAGE_PIXELS = 40_000_000  # a training image with more is refused before its pixels are decoded


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class Dataset:
    """A dataset held as tensors: uint8 images [N, C, H, W], long labels [N], for train and test."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # random-crop padding in pixels (0: no crop)
    flip: bool  # random horizontal flips make sense for this data

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """The images and labels of ``"train"`` or ``"test"``."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")

    def to(self, device: torch.device | str) -> Dataset:
        return replace(self, train_images=self.train_images.to(device), train_labels=self.train_labels.to(device),
                       test_images=self.test_images.to(device), test_labels=self.test_labels.to(device))

    def holdout(self, fraction: float = 0.2) -> Dataset:
        """Train on the rest of the training split, evaluate on ``fraction`` of it (per class, ``SPLIT_SEED``).

        For choosing hyper-parameters without looking at the test split; the result is named ``NAME[holdout]``
        and its ``test_*`` arrays are the held-out training images.
        """
        keep, held = stratified_split(self.train_labels.cpu().numpy(), fraction)
        return make_dataset(f"{self.name}[holdout]", self.train_images[keep], self.train_labels[keep],
                     self.train_images[held], self.train_labels[held], self.class_names, self.crop_padding,
                     self.flip)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, standardised with the training split's statistics."""
        return normalize_images(images, self.mean, self.std)

    def denormalize(self, images: Tensor) -> Tensor:
        """The inverse of ``normalize``, as float in [0, 1] (for display)."""
        mean, std = _channel_stats(self.mean, self.std, images.device)
        return (images * std + mean).clamp(0, 1)


@functools.lru_cache(maxsize=64)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean and std as [1, C, 1, 1] tensors on ``device``, made once per device: building them from Python
    floats at every call is a blocking host-to-device copy on a GPU, twice per training step."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def normalize_images(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 images -> float32 ``(x / 255 - mean) / std`` per channel (shared by in-memory and streamed data)."""
    mean_t, std_t = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float() / 255.0 - mean_t) / std_t


@dataclass(frozen=True)
class ImageFiles:
    """One split of an image-file dataset, not yet decoded: file paths and labels.

    The paths are one numpy bytes array, not a list of str: DataLoader workers read it without touching Python
    reference counts, so the pages forked into every worker stay shared instead of being copied one by one.
    """

    paths: np.ndarray  # [N] bytes (os.fsencode of each path)
    labels: Tensor  # [N] long

    @classmethod
    def from_samples(cls, samples: list[tuple[str, int]]) -> ImageFiles:
        """From torchvision-style ``(path, label)`` pairs."""
        return cls(np.array([os.fsencode(path) for path, _ in samples], dtype=np.bytes_),
                   torch.tensor([label for _, label in samples], dtype=torch.long))

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        return os.fsdecode(self.paths[index])

    def subset(self, indices: np.ndarray) -> ImageFiles:
        return ImageFiles(self.paths[indices], self.labels[torch.as_tensor(indices, dtype=torch.long)])


def check_class_sizes(labels: Tensor, class_folders: list[Path], readable: bool = False) -> None:
    """Every class of a training split needs 2 images: an IPS pair is two different images of one class. The rule
    of both data modes, on the files listed before any is decoded; ``readable``: on the images that could be
    decoded (an in-memory dataset, which decodes every file up front, checks both)."""
    counts = torch.bincount(labels, minlength=len(class_folders))
    kind = "readable image" if readable else "image"
    for folder, count in zip(class_folders, counts.tolist(), strict=True):
        if count < 2:
            held = f"no {kind}s" if count == 0 else f"only one {kind}"
            raise DatasetError(f"class folder {folder} holds {held} for training; every class needs at least 2 "
                               f"(an IPS pair is two different images of one class)")


def natural_crop_padding(image_size: int) -> int:
    """Random-crop padding for natural images of side ``image_size``: an eighth of the side (4 px on 32 px)."""
    return max(1, image_size // 8)


def read_image(path: str, image_size: tuple[int, int]) -> Tensor:
    """One image file as uint8 RGB [3, H, W], resized (bilinear, antialiased) to ``image_size``: the one decoder of
    image-file datasets, in memory or streamed, so both give the same bytes.

    The functional kernels of ``v2.Compose([v2.PILToTensor(), v2.Resize(image_size, antialias=True)])``, without the
    transform objects' dispatch, which cost a fifth of the time on small images.
    """
    from torchvision.transforms.v2 import functional as F

    return F.resize(F.pil_to_tensor(_rgb_loader(path)), list(image_size), antialias=True)


def augment(images: Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> Tensor:
    """Random crop (zero padding of ``padding`` pixels) and optional horizontal flip, batched.

    Every crop is a window of the padded image at a random offset: one ``gather`` over the flattened pixels
    builds them all (faster on the CPU than 4-D advanced indexing). ``generator`` must live on the
    images' device.
    """
    batch, channels, h, w = images.shape
    if padding > 0:
        padded_w = w + 2 * padding
        padded = torch.nn.functional.pad(images, (padding,) * 4).view(batch, channels, -1)
        offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=images.device)
        start = offsets[:, 0] * padded_w + offsets[:, 1]  # flat index of each crop's top-left pixel
        window = (torch.arange(h, device=images.device)[:, None] * padded_w
                  + torch.arange(w, device=images.device)).view(1, 1, h * w)
        index = (start.view(batch, 1, 1) + window).expand(batch, channels, h * w)
        images = padded.gather(2, index).view(batch, channels, h, w)
    if flip:
        flipped = torch.rand(batch, generator=generator, device=images.device) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    return images


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding ``test_fraction`` of every class in the test split (fixed seed)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def make_dataset(name: str, train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor,
                 class_names: tuple[str, ...], crop_padding: int, flip: bool) -> Dataset:
    """A ``Dataset`` of these tensors, normalised with the training split's per-channel statistics."""
    pixels = train_images.float().div(255.0).transpose(0, 1).reshape(train_images.shape[1], -1)
    mean = tuple(float(v) for v in pixels.mean(dim=1))
    std = tuple(max(float(v), MIN_STD) for v in pixels.std(dim=1))
    return Dataset(name, train_images.contiguous(), train_labels, test_images.contiguous(), test_labels,
                          class_names, mean, std, crop_padding, flip)


def _rgb_loader(path: str) -> Image.Image:
    """The file decoded to RGB; ValueError, before decoding, for more than ``MAX_IMAGE_PIXELS`` pixels."""
    with Image.open(path) as img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{path} is {img.width}x{img.height} pixels; training images up to "
                             f"{MAX_IMAGE_PIXELS // 10**6} megapixels are read")
        return img.convert("RGB")
