"""Tiny-ImageNet-200 by name: its standard layout read into file lists, and its download.

``--data-root`` holds ``tiny-imagenet-200/`` as the official archive unpacks it::

    wnids.txt                       the 200 WordNet ids, one a line
    words.txt                       "wnid<TAB>names" for (a superset of) them
    train/<wnid>/images/*.JPEG      500 training images per class
    val/images/*.JPEG               10,000 labelled images
    val/val_annotations.txt         "file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1", one line per val image

The labelled val split is the test split (``test/`` has no labels). Labels number the wnids in sorted order, as
torchvision's ImageFolder would number ``train/``; class names are the words.txt entries. Images are 64x64 RGB
(the few grayscale files are read as RGB), so the default IPS patch is
``explorer.ips.default_patch_size((64, 64))`` = 16 px, a 4x4 grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explorer.data.base import Dataset, DatasetError, ImageFiles, check_class_sizes, natural_crop_padding
from explorer.data.streaming import channel_stats, decode_all

__all__ = ["FOLDER", "IMAGE_SIZE", "MD5", "URL", "load_tinyimagenet", "tinyimagenet_files", "write_miniature"]

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the archive at URL; torchvision checks it after the download
IMAGE_SIZE = 64


def tinyimagenet_files(data_root: str | Path, download: bool = False) -> tuple[ImageFiles, ImageFiles, tuple[str, ...]]:
    """Train files, val (= test) files and class names of Tiny-ImageNet under ``data_root``; nothing decoded.

    Only directory listings and the two small text files are read, so this is cheap even for 110,000 images.
    A missing file or folder, a class folder with fewer than 2 images or a val image without a label raises a
    ``DatasetError`` naming it.
    """
    root = Path(data_root).expanduser()
    base = root / FOLDER
    if not base.is_dir():
        if not download:
            raise DatasetError(f"tinyimagenet was not found under {base}; point --data-root at the folder that holds "
                               f"{FOLDER}, or add --download to fetch it (needs internet)")
        _download(root)
    wnids = sorted(_lines(base / "wnids.txt"))
    if not wnids:
        raise DatasetError(f"{base / 'wnids.txt'} lists no class (one wnid a line expected)")
    names = _class_names(base / "words.txt", wnids)
    class_folders = [base / "train" / wnid / "images" for wnid in wnids]
    train = []
    for label, folder in enumerate(class_folders):
        if not folder.is_dir():
            raise DatasetError(f"class folder {folder} is missing (wnids.txt lists {wnids[label]})")
        train += [(str(path), label) for path in _images_in(folder)]
    train_files = ImageFiles.from_samples(train)
    check_class_sizes(train_files.labels, class_folders)
    return train_files, ImageFiles.from_samples(_val_samples(base / "val", wnids)), names


def load_tinyimagenet(data_root: str | Path = "data", download: bool = False,
                      num_workers: int | None = None) -> Dataset:
    """Tiny-ImageNet whole in memory (``load_dataset("tinyimagenet")``): decoded by DataLoader workers into
    preallocated tensors, the statistics counted batch by batch, so the peak stays near the final 1.4 GB."""
    train, test, class_names = tinyimagenet_files(data_root, download)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    train_images, train_labels = decode_all(train, size, num_workers)
    test_images, test_labels = decode_all(test, size, num_workers)
    mean, std = channel_stats(train_images.split(256))
    return Dataset("tinyimagenet", train_images, train_labels, test_images, test_labels, class_names, mean, std,
                   crop_padding=natural_crop_padding(IMAGE_SIZE), flip=True)


def _download(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, download_root=str(root), md5=MD5)
    except OSError as exc:  # no internet, a refused connection, a full disk
        raise DatasetError(f"could not download tinyimagenet from {URL} into {root}: {exc}") from None
    if not (root / FOLDER).is_dir():
        raise DatasetError(f"the archive from {URL} did not unpack to {root / FOLDER}")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        raise DatasetError(f"{path} is missing or unreadable; it is part of the {FOLDER} layout") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _class_names(words_file: Path, wnids: list[str]) -> tuple[str, ...]:
    words = dict(line.split("\t", 1) for line in _lines(words_file) if "\t" in line)
    missing = [wnid for wnid in wnids if wnid not in words]
    if missing:
        raise DatasetError(f"{words_file} has no name for {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''} (listed in wnids.txt)")
    return tuple(words[wnid].strip() for wnid in wnids)


def _images_in(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMG_EXTENSIONS)


def _val_samples(val_dir: Path, wnids: list[str]) -> list[tuple[str, int]]:
    """The val images with the labels of val_annotations.txt; every image must be listed and every entry exist."""
    annotations = val_dir / "val_annotations.txt"
    label_of_wnid = {wnid: label for label, wnid in enumerate(wnids)}
    label_of_file = {}
    for number, line in enumerate(_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of_wnid:
            raise DatasetError(f"{annotations} line {number} ({line!r}) does not name a wnid of wnids.txt "
                               f"as its second tab-separated field")
        label_of_file[fields[0]] = label_of_wnid[fields[1]]
    images_dir = val_dir / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is missing; it is part of the {FOLDER} layout")
    images = _images_in(images_dir)
    unlisted = [path for path in images if path.name not in label_of_file]
    if unlisted:
        raise DatasetError(f"val image {unlisted[0]} is not listed in {annotations}"
                           f"{f' (nor are {len(unlisted) - 1} more)' if len(unlisted) > 1 else ''}")
    absent = sorted(set(label_of_file) - {path.name for path in images})
    if absent:
        raise DatasetError(f"{annotations} lists {absent[0]}, which is not in {images_dir}"
                           f"{f' (nor are {len(absent) - 1} more)' if len(absent) > 1 else ''}")
    return [(str(path), label_of_file[path.name]) for path in images]


def write_miniature(data_root: str | Path, classes: int = 200, train_per_class: int = 10, val_per_class: int = 2,
                    seed: int = 0) -> Path:
    """A synthetic Tiny-ImageNet in the official layout under ``data_root``: ``classes`` wnids, 64x64 JPEGs.

    For machines without the real archive (tests, benchmarks, the GPU check): every image is its class's colour
    pattern (a random 4x4 grid of colours, upsampled and shifted) plus per-image noise, so a network can
    learn the classes and patch swaps carry real class evidence. Returns the ``tiny-imagenet-200`` folder.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(data_root).expanduser() / FOLDER
    wnids = [f"n{9000000 + k:08d}" for k in range(classes)]
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{wnid}\tsynthetic class {k}\n" for k, wnid in enumerate(wnids)))
    patterns = rng.integers(0, 256, (classes, 4, 4, 3)).repeat(16, axis=1).repeat(16, axis=2)

    def images(label: int, count: int) -> list[Image.Image]:
        dy, dx = rng.integers(-8, 9, 2)  # one shift per class and split, noise per image
        pixels = np.roll(patterns[label], (dy, dx), axis=(0, 1)) + rng.integers(-50, 51, (count, 64, 64, 3))
        return [Image.fromarray(p) for p in pixels.clip(0, 255).astype(np.uint8)]

    annotations = []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(images(label, train_per_class)):
            picture.save(folder / f"{wnid}_{i}.JPEG")
        for picture in images(label, val_per_class):
            name = f"val_{len(annotations)}.JPEG"
            picture.save(base / "val" / "images" / name)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "val_annotations.txt").write_text("".join(annotations))
    return base
