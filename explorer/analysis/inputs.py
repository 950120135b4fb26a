"""What a person picks in the app, turned into indices: class names, sample ranks, whole numbers, random pairs.

Every function raises a ``ValueError`` whose message names what was wrong and what is allowed; the app shows
it as it is. The tabs share these, so a class name or a sample index means the same thing in every tab.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from explorer.analysis.pairs import class_test_index
from explorer.data import Dataset
from explorer.ips import default_patch_size, dividing_patch_sizes
from explorer.training.config import MAX_SEED

__all__ = ["class_label", "class_size", "patch_size_choices", "random_class_pair", "seed_number", "whole_number"]


def class_label(dataset: Dataset, class_name: str) -> int:
    """The label of a class name, or a ValueError that lists the dataset's classes."""
    if class_name not in dataset.class_names:
        raise ValueError(f"{class_name!r} is not a class of {dataset.name}; choose one of {list(dataset.class_names)}")
    return dataset.class_names.index(class_name)


def class_size(dataset: Dataset, label: int) -> int:
    """How many test images class ``label`` has (the range of a sample index within the class)."""
    return int((dataset.test_labels == label).sum())


def patch_size_choices(image_size: tuple[int, int]) -> list[tuple[str, int]]:
    """(label, size) of every patch size training accepts for ``image_size``, the default one marked."""
    default = default_patch_size(image_size)
    return [(f"{size} (default)" if size == default else str(size), size) for size in dividing_patch_sizes(*image_size)]


def whole_number(value: Any, what: str) -> int:
    """``value`` (a number field's float, or a string) as an int; a ValueError naming ``what`` if it is empty (an
    emptied box: None), has a fraction or is no number at all (text, infinity, NaN)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{what} is empty; type a whole number")  # an emptied box: "got 'None'" told nobody
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{what} must be a whole number; got {str(value)[:40]!r}")
    return int(number)


def seed_number(value: Any) -> int:
    """A seed field's value as a seed the random generators take (0 to 2^63 - 1); ValueError saying so."""
    seed = whole_number(value, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to 2^63 - 1; got {value!r}"[:200])
    return seed


def random_class_pair(dataset: Dataset, rng: np.random.Generator) -> tuple[int, int, int, int, int]:
    """A random class and two different random test images of it (the same one twice if the class has one).

    Returns (label, rank a, rank b, test index a, test index b); a rank is the index within the class, as the
    Patch swap tab's sliders count.
    """
    label = int(rng.integers(dataset.num_classes))
    count = class_size(dataset, label)
    rank_a, rank_b = (int(v) for v in rng.choice(count, size=2, replace=count < 2))
    return (label, rank_a, rank_b, class_test_index(dataset, label, rank_a),
            class_test_index(dataset, label, rank_b))
