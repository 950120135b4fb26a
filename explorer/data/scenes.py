"""Datasets for the dense tasks (segmentation, detection): scenes with a class per pixel and a box per object.

A ``DenseDataset`` holds uint8 images [N, C, H, W], a semantic mask per image (uint8 [N, H, W]: 0 background,
k + 1 for object class k, ``IGNORE`` for pixels no metric counts) and, per image, its boxes (float [K, 4], ``xyxy``
in pixels, the right and bottom edges exclusive) with their classes (long [K], 0-based object classes).

``load_dense_dataset`` names them:

- ``digit-scenes`` (default, offline): canvases of ``scene_size`` x ``scene_size`` black pixels (64 by default), each
  holding 1 to 4 real mnist5k digits at random positions and heights (``DIGIT_HEIGHTS``), placed so that two digits'
  boxes share at most ``MAX_OVERLAP`` of the smaller box: digits may touch and cross, none hides behind another.
  Train scenes paste only mnist5k's training digits, test scenes only its test digits, so no digit is seen in both.
  A pixel's value is the brightest ink over it (digits are composed by maximum), its class that of the digit this
  ink belongs to when it is at least ``INK`` (fainter ink, the stroke's anti-aliased rim, is background), and a
  digit's box is the bounding box of its own ink of at least ``INK``, before any other digit covers it. Everything
  follows from the scene seed (``SCENE_SEED`` unless given): every backbone of a comparison trains and is tested on
  the same scenes.
- ``voc``: Pascal VOC 2012 through torchvision's loaders (``explorer.data.voc``), segmentation or detection.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from explorer.data import DatasetError, load_dataset, normalize_images

__all__ = ["DENSE_DATASETS", "DIGIT_HEIGHTS", "IGNORE", "INK", "MAX_OVERLAP", "SCENE_SEED", "DenseDataset",
           "DenseSplit", "digit_scenes", "load_dense_dataset"]

DENSE_DATASETS = ("digit-scenes", "voc")
IGNORE = 255  # mask value of pixels left out of every metric (VOC's object borders)
INK = 96  # a pasted pixel at least this bright is its digit's ink (mnist strokes are 255 at their core)
DIGIT_HEIGHTS = (16, 32)  # the smallest and largest height in pixels of a pasted digit's ink
DIGITS_PER_SCENE = (1, 4)
MAX_OVERLAP = 0.3  # share of the smaller box above which a digit goes elsewhere (PLACEMENT_TRIES, then left out)
PLACEMENT_TRIES = 20
SCENE_SEED = 0
TRAIN_SCENES, TEST_SCENES = 2000, 500


@dataclass(frozen=True)
class DenseSplit:
    """One split: images, masks, and each image's boxes and box classes."""

    images: Tensor  # uint8 [N, C, H, W]
    masks: Tensor  # uint8 [N, H, W]: 0 background, k + 1 object class k, IGNORE
    boxes: tuple[Tensor, ...]  # N tensors float [K_i, 4], xyxy pixels
    labels: tuple[Tensor, ...]  # N tensors long [K_i], object classes
    sources: tuple[Tensor, ...] = ()  # digit scenes: N tensors long [K_i], the pasted digits' indices in their split

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DenseDataset:
    """Scenes with masks and boxes, train and test; ``class_names`` are the object classes (no background)."""

    name: str
    train: DenseSplit
    test: DenseSplit
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def split(self, name: str) -> DenseSplit:
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")
        return self.train if name == "train" else self.test

    def normalized(self, images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
        """uint8 images -> float, standardised with a backbone's statistics (what its features expect)."""
        return normalize_images(images, mean, std)


def _ink_crops(images: Tensor) -> list[np.ndarray]:
    """Each 28x28 digit cut to the bounding box of its ink (any pixel >= ``INK``), as float32 [h, w]."""
    crops = []
    for image in images[:, 0].numpy().astype(np.float32):
        rows, cols = np.nonzero(image >= INK)
        crops.append(image[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    return crops


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """The largest share of the smaller box that ``box`` and one of ``others`` (xyxy) have in common (0: none)."""
    best = 0.0
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        best = max(best, max(w, 0) * max(h, 0) / smaller)
    return best


def _resized(crop: np.ndarray, height: int, side: int) -> np.ndarray:
    """The digit resized to ``height`` pixels (bilinear, antialiased, aspect kept, at most ``side`` wide)."""
    width = max(1, min(side, round(crop.shape[1] * height / crop.shape[0])))
    patch = F.interpolate(torch.from_numpy(crop)[None, None], size=(height, width), mode="bilinear",
                          antialias=True, align_corners=False)[0, 0]
    return patch.clamp(0, 255).round().numpy()


def _place(patch: np.ndarray, rng: np.random.Generator, side: int, placed: list[np.ndarray]) -> np.ndarray | None:
    """A free place for ``patch``: [its ink's xyxy box, x, y of the patch], or None (no ink, or no free place)."""
    rows, cols = np.nonzero(patch >= INK)
    if len(rows) == 0:  # a faint digit shrunk below the ink threshold
        return None
    height, width = patch.shape
    for _ in range(PLACEMENT_TRIES):
        x, y = int(rng.integers(0, side - width + 1)), int(rng.integers(0, side - height + 1))
        box = np.array([x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1])
        if _overlap(box, placed) <= MAX_OVERLAP:
            return np.concatenate([box, [x, y]])
    return None


def _scene(crops: list[np.ndarray], labels: np.ndarray, rng: np.random.Generator,
           side: int) -> tuple[np.ndarray, ...]:
    """One scene: image [side, side] uint8, mask, boxes [K, 4], classes [K], source indices [K]."""
    brightest = np.zeros((side, side), np.float32)
    owner = np.full((side, side), -1)
    boxes, sources = [], []
    for _ in range(int(rng.integers(DIGITS_PER_SCENE[0], DIGITS_PER_SCENE[1] + 1))):
        index = int(rng.integers(len(crops)))
        patch = _resized(crops[index], int(rng.integers(DIGIT_HEIGHTS[0], DIGIT_HEIGHTS[1] + 1)), side)
        found = _place(patch, rng, side, boxes)
        if found is None:
            continue
        x, y = found[4:]
        window = (slice(y, y + patch.shape[0]), slice(x, x + patch.shape[1]))
        brighter = patch > brightest[window]
        brightest[window] = np.where(brighter, patch, brightest[window])
        owner[window] = np.where(brighter, len(boxes), owner[window])
        boxes.append(found[:4])
        sources.append(index)
    source = np.array(sources, dtype=np.int64)
    classes = labels[source]
    mask = np.where((brightest >= INK) & (owner >= 0), classes[owner.clip(min=0)] + 1 if len(source) else 0, 0)
    boxes_array = np.array(boxes, np.float32).reshape(-1, 4)
    return brightest.astype(np.uint8), mask.astype(np.uint8), boxes_array, classes, source


def _scenes(images: Tensor, labels: Tensor, count: int, side: int, seed: int, split: int) -> DenseSplit:
    rng = np.random.default_rng([seed, split])
    crops = _ink_crops(images)
    image, mask, boxes, classes, sources = zip(*(_scene(crops, labels.numpy(), rng, side) for _ in range(count)),
                                               strict=True)
    return DenseSplit(torch.from_numpy(np.stack(image))[:, None].contiguous(), torch.from_numpy(np.stack(mask)),
                      tuple(map(torch.from_numpy, boxes)), tuple(map(torch.from_numpy, classes)),
                      tuple(map(torch.from_numpy, sources)))


@functools.lru_cache(maxsize=8)
def digit_scenes(scene_size: int = 64, train_scenes: int = TRAIN_SCENES, test_scenes: int = TEST_SCENES,
                 seed: int = SCENE_SEED) -> DenseDataset:
    """mnist5k's train digits pasted into ``train_scenes`` scenes, its test digits into ``test_scenes`` (cached)."""
    if scene_size < DIGIT_HEIGHTS[1]:
        raise DatasetError(f"digit scenes must be at least {DIGIT_HEIGHTS[1]} pixels wide to hold the largest "
                           f"digit; got --scene-size {scene_size}")
    digits = load_dataset("mnist5k")
    train = _scenes(digits.train_images, digits.train_labels, train_scenes, scene_size, seed, 0)
    test = _scenes(digits.test_images, digits.test_labels, test_scenes, scene_size, seed, 1)
    return DenseDataset("digit-scenes", train, test, digits.class_names)


def load_dense_dataset(name: str, task: str, *, scene_size: int = 64, train_scenes: int = TRAIN_SCENES,
                       test_scenes: int = TEST_SCENES, scene_seed: int = SCENE_SEED, data_root: str | Path = "data",
                       download: bool = False, image_size: int = 128) -> DenseDataset:
    """A dense dataset by name, for ``task`` (segmentation or detection: VOC has one set of images for each).

    The scene arguments apply to ``digit-scenes``; ``data_root``, ``download`` and ``image_size`` to ``voc``.
    """
    if name == "digit-scenes":
        return digit_scenes(scene_size, train_scenes, test_scenes, scene_seed)
    if name == "voc":
        from explorer.data.voc import load_voc

        return load_voc(task, data_root, download, image_size)
    raise DatasetError(f"unknown dataset {name!r} for {task}; choose one of: {', '.join(DENSE_DATASETS)}")
