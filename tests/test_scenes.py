"""Digit scenes: what is pasted where, the masks and boxes that say so, and the train / test separation."""

import numpy as np
import pytest
import torch

from explorer.data import DatasetError, load_dataset
from explorer.data.scenes import DIGIT_HEIGHTS, IGNORE, INK, MAX_OVERLAP, digit_scenes, load_dense_dataset


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes(64, 300, 150, seed=3)


def _digit_bytes(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_no_train_digit_appears_in_a_test_scene(scenes):
    """Test scenes paste test digits only: every digit a test scene holds is a test image of mnist5k, by content
    (not only by index), and none is one of the training images."""
    digits = load_dataset("mnist5k")
    train_digits = _digit_bytes(digits.train_images)
    used_in_test = {int(i) for sources in scenes.test.sources for i in sources}
    used_in_train = {int(i) for sources in scenes.train.sources for i in sources}
    assert len(used_in_test) > 200 and max(used_in_test) < len(digits.test_images)
    assert max(used_in_train) < len(digits.train_images)
    assert not _digit_bytes(digits.test_images[sorted(used_in_test)]) & train_digits
    for sources, labels in zip(scenes.test.sources, scenes.test.labels, strict=True):
        assert torch.equal(labels, digits.test_labels[sources])  # each box's class is its digit's label


def test_masks_hold_the_ink_of_the_digits_and_nothing_else(scenes):
    for split in (scenes.train, scenes.test):
        ink = split.images[:, 0] >= INK
        assert torch.equal(split.masks > 0, ink)  # every ink pixel has a class, every background pixel none
        assert int(split.masks.max()) <= 10 and not (split.masks == IGNORE).any()


def test_every_labelled_pixel_lies_in_a_box_of_its_class_and_every_box_holds_its_digit(scenes):
    for mask, boxes, labels in zip(scenes.test.masks, scenes.test.boxes, scenes.test.labels, strict=True):
        covered = torch.zeros_like(mask, dtype=torch.bool)
        for (x0, y0, x1, y1), label in zip(boxes.long().tolist(), labels.tolist(), strict=True):
            inside = mask[y0:y1, x0:x1] == label + 1
            assert inside.any()  # the digit is visible in its own box
            region = torch.zeros_like(covered)
            region[y0:y1, x0:x1] = True
            covered |= region & (mask == label + 1)
        assert torch.equal(covered, mask > 0)


def test_a_lone_digit_s_box_is_the_tight_box_of_its_ink(scenes):
    lone = [i for i, boxes in enumerate(scenes.train.boxes) if len(boxes) == 1]
    assert len(lone) > 20
    for i in lone:
        rows, cols = torch.nonzero(scenes.train.masks[i], as_tuple=True)
        tight = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        assert scenes.train.boxes[i][0].tolist() == tight


def test_digits_keep_their_sizes_and_their_distance(scenes):
    for boxes in scenes.train.boxes:
        heights = (boxes[:, 3] - boxes[:, 1]).numpy()
        assert (heights <= DIGIT_HEIGHTS[1]).all() and (heights >= DIGIT_HEIGHTS[0] // 2).all()
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).numpy()
        for i in range(len(boxes)):
            for j in range(i):
                w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                assert max(float(w), 0) * max(float(h), 0) / min(areas[i], areas[j]) <= MAX_OVERLAP + 1e-6
    counts = np.bincount([len(b) for b in scenes.train.boxes], minlength=5)
    assert counts[1:].min() > 30  # one to four digits per scene, each count common


def test_scenes_follow_from_their_seed():
    a, b = digit_scenes(48, 40, 10, seed=5), digit_scenes.__wrapped__(48, 40, 10, seed=5)
    assert a is not b and torch.equal(a.train.images, b.train.images) and torch.equal(a.test.masks, b.test.masks)
    assert all(torch.equal(x, y) for x, y in zip(a.train.boxes, b.train.boxes, strict=True))
    assert not torch.equal(a.train.images, digit_scenes(48, 40, 10, seed=6).train.images)
    assert a.image_size == (48, 48) and a.channels == 1 and len(a.train) == 40 and len(a.test) == 10


def test_a_scene_too_small_for_the_largest_digit_is_refused():
    with pytest.raises(DatasetError, match="at least 32 pixels"):
        load_dense_dataset("digit-scenes", "segmentation", scene_size=24)
    with pytest.raises(DatasetError, match="unknown dataset 'coco'"):
        load_dense_dataset("coco", "detection")
