"""The datasets: named datasets as uint8 tensors, image files streamed from disk when they would not fit in memory.

- ``base``: the ``Dataset`` type, image files and their decoder, the per-class split, normalisation and the batched
  on-device augmentation;
- ``datasets``: the named datasets (``DATASETS``; ``load_dataset``) and ``open_dataset``, which holds a dataset in
  memory or streams it, as ``--data-mode`` decides;
- ``streaming``: the streamed dataset, its same-class pair sampler and batch stream;
- ``tinyimagenet``: Tiny-ImageNet-200's on-disk layout.

The package's public names are importable from ``explorer.data`` itself.
"""

from explorer.data.base import (
    IMAGE_SUFFIXES,
    MIN_STD,
    SPLIT_SEED,
    UNREADABLE_ERRORS,
    Dataset,
    DatasetError,
    ImageFiles,
    augment,
    check_class_sizes,
    natural_crop_padding,
    normalize_images,
    read_image,
    stratified_split,
)
from explorer.data.datasets import (
    DATA_MODES,
    DATASETS,
    LOAD_PEAK,
    MEMORY_FRACTION,
    OFFLINE_DATASETS,
    available_memory,
    choose_data_mode,
    imagefolder_files,
    load_dataset,
    open_dataset,
)
from explorer.data.streaming import StreamedDataset

__all__ = ["DATASETS", "DATA_MODES", "IMAGE_SUFFIXES", "LOAD_PEAK", "MEMORY_FRACTION", "MIN_STD", "OFFLINE_DATASETS",
           "SPLIT_SEED", "UNREADABLE_ERRORS", "Dataset", "DatasetError", "ImageFiles", "StreamedDataset", "augment",
           "available_memory", "check_class_sizes", "choose_data_mode", "imagefolder_files", "load_dataset",
           "natural_crop_padding", "normalize_images", "open_dataset", "read_image", "stratified_split"]
