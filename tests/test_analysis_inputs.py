"""What a person picks, turned into indices: class names, sample ranks, whole numbers, random same-class pairs."""

import numpy as np
import pytest

from explorer.analysis.inputs import (
    class_label,
    class_size,
    patch_size_choices,
    random_class_pair,
    seed_number,
    whole_number,
)
from explorer.analysis.pairs import class_test_index


def test_class_label_is_the_index_of_the_name_and_a_bad_name_lists_the_classes(digits):
    assert class_label(digits, "7") == 7 and class_label(digits, digits.class_names[0]) == 0
    with pytest.raises(ValueError, match=r"'x' is not a class of digits; choose one of \['0', '1', .*'9'\]"):
        class_label(digits, "x")


def test_class_size_counts_the_test_images_of_a_class(digits):
    sizes = [class_size(digits, label) for label in range(10)]
    assert sizes == np.bincount(digits.test_labels.numpy(), minlength=10).tolist()
    assert sum(sizes) == len(digits.test_labels) and min(sizes) > 30


@pytest.mark.parametrize("value,expected", [(3, 3), (3.0, 3), ("4", 4), (-2.0, -2), (0, 0)])
def test_whole_number_accepts_whole_values(value, expected):
    assert whole_number(value, "seed") == expected and isinstance(whole_number(value, "seed"), int)


@pytest.mark.parametrize("value", [2.5, "1.5", float("inf"), float("nan"), "1e999", "ten"])
def test_whole_number_refuses_fractions_and_nothing_naming_the_field(value):
    with pytest.raises(ValueError, match=f"sample a must be a whole number; got {str(value)!r}"):
        whole_number(value, "sample a")


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_emptied_box_is_refused_as_empty(value):
    with pytest.raises(ValueError, match="^seed is empty; type a whole number$"):
        seed_number(value)


@pytest.mark.parametrize("value", [2**64, 2.0**64, -1, "18446744073709551616"])
def test_a_seed_beyond_what_the_generators_take_is_refused_saying_the_range(value):
    """A seed >= 2^64 reached torch.Generator.manual_seed: "Overflow when unpacking long long"."""
    with pytest.raises(ValueError, match=r"^seed must be a whole number from 0 to 2\^63 - 1; got "):
        seed_number(value)
    assert seed_number(2**63 - 1) == 2**63 - 1 and seed_number(7.0) == 7


def test_random_class_pair_draws_two_different_members_of_one_class(digits):
    rng = np.random.default_rng(3)
    for _ in range(200):  # about 36 images per class: a draw with replacement repeats one within 200
        label, rank_a, rank_b, index_a, index_b = random_class_pair(digits, rng)
        assert rank_a != rank_b and index_a != index_b
        assert int(digits.test_labels[index_a]) == int(digits.test_labels[index_b]) == label
        assert (index_a, index_b) == (class_test_index(digits, label, rank_a), class_test_index(digits, label, rank_b))
    assert random_class_pair(digits, np.random.default_rng(5)) == random_class_pair(digits, np.random.default_rng(5))


def test_patch_size_choices_are_what_training_accepts_with_the_default_marked():
    assert patch_size_choices((28, 28)) == [("1", 1), ("2", 2), ("4", 4), ("7 (default)", 7), ("14", 14), ("28", 28)]
    assert patch_size_choices((8, 8)) == [("1", 1), ("2 (default)", 2), ("4", 4), ("8", 8)]
