"""Pascal VOC 2012 as a ``DenseDataset``, read by torchvision's loaders from ``DATA_ROOT/VOCdevkit/VOC2012``.

Segmentation reads ``VOCSegmentation`` (its ``train`` list as the train split, ``val`` as the test split: VOC's
test labels are not public); detection reads ``VOCDetection`` the same way. Every image is resized to
``image_size`` x ``image_size`` RGB (bilinear, antialiased; masks by nearest neighbour, so a pixel keeps a class);
boxes are scaled with it. VOC's mask value 255 (object borders, "difficult" regions) is ``scenes.IGNORE``; in
detection every object counts, "difficult" ones too (the COCO evaluation has no such flag). ``download=True``
fetches the 2 GB archive on a machine with internet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from explorer.data import DatasetError
from explorer.data.scenes import DenseDataset, DenseSplit

__all__ = ["VOC_CLASSES", "load_voc"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_SPLITS = {"train": "train", "test": "val"}


def _image(picture: Image.Image, size: int) -> Tensor:
    return TF.resize(TF.pil_to_tensor(picture.convert("RGB")), [size, size], antialias=True)


def _segmentation_split(dataset, size: int) -> DenseSplit:
    images, masks, boxes, labels = [], [], [], []
    for picture, target in dataset:
        images.append(_image(picture, size))
        mask = TF.resize(torch.from_numpy(np.array(target, dtype=np.uint8))[None], [size, size],
                         interpolation=TF.InterpolationMode.NEAREST)[0]
        masks.append(mask)
        boxes.append(torch.zeros(0, 4))
        labels.append(torch.zeros(0, dtype=torch.long))
    return DenseSplit(torch.stack(images), torch.stack(masks), tuple(boxes), tuple(labels))


def _objects(annotation: dict, scale_x: float, scale_y: float) -> tuple[Tensor, Tensor]:
    objects = annotation["annotation"].get("object", [])
    boxes, labels = [], []
    for obj in objects if isinstance(objects, list) else [objects]:
        box = obj["bndbox"]  # 1-based pixel numbers, both ends included
        boxes.append([(float(box["xmin"]) - 1) * scale_x, (float(box["ymin"]) - 1) * scale_y,
                      float(box["xmax"]) * scale_x, float(box["ymax"]) * scale_y])
        labels.append(VOC_CLASSES.index(obj["name"]))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def _detection_split(dataset, size: int) -> DenseSplit:
    images, boxes, labels = [], [], []
    for picture, annotation in dataset:
        width, height = picture.size
        images.append(_image(picture, size))
        box, label = _objects(annotation, size / width, size / height)
        boxes.append(box)
        labels.append(label)
    masks = torch.zeros(len(images), size, size, dtype=torch.uint8)  # detection has no masks: background
    return DenseSplit(torch.stack(images), masks, tuple(boxes), tuple(labels))


def load_voc(task: str, data_root: str | Path, download: bool, image_size: int) -> DenseDataset:
    """VOC 2012 for ``task`` (segmentation or detection); ``DatasetError`` with what to do when it is missing."""
    from torchvision.datasets import VOCDetection, VOCSegmentation

    root = Path(data_root).expanduser()
    loader, read = (VOCSegmentation, _segmentation_split) if task == "segmentation" else (VOCDetection,
                                                                                          _detection_split)
    try:
        sources = {name: loader(str(root), year="2012", image_set=image_set, download=download)
                   for name, image_set in _SPLITS.items()}
    except RuntimeError:  # torchvision's own advice (download=True) names no flag of ours
        raise DatasetError(f"Pascal VOC 2012 was not found under {root / 'VOCdevkit' / 'VOC2012'}; "
                           f"point --data-root at the folder that holds VOCdevkit, or add --download to fetch it "
                           f"(needs internet)") from None
    except OSError as exc:  # a missing image list, or a download without internet
        raise DatasetError(f"could not read Pascal VOC 2012 under {root}: {exc}") from None
    if not all(len(source) for source in sources.values()):
        raise DatasetError(f"Pascal VOC 2012 under {root} lists no image for one of its splits (train, val)")
    try:
        splits = {name: read(source, image_size) for name, source in sources.items()}
    except (OSError, KeyError, ValueError) as exc:  # a missing or unreadable file, a foreign annotation
        raise DatasetError(f"could not read Pascal VOC 2012 under {root}: {type(exc).__name__}: {exc}") from None
    return DenseDataset("voc", splits["train"], splits["test"], VOC_CLASSES)
