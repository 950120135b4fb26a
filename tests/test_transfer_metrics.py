"""The dense metrics against cases worked out by hand (and, for detection, by COCO's definition)."""

import pytest
import torch

from explorer.data.scenes import IGNORE
from explorer.transfer.metrics import detection_metrics, segmentation_metrics


def _masks() -> torch.Tensor:
    truth = torch.zeros(2, 8, 8, dtype=torch.uint8)
    truth[:, 2:6, 2:6] = 4  # 16 pixels of class 3 (mask value 4) in each image, 48 of background
    return truth


def test_a_perfect_segmentation_scores_one():
    truth = _masks()
    assert segmentation_metrics(truth, truth, 11) == {"miou": 1.0, "pixel_accuracy": 1.0}


def test_segmentation_iou_per_class_averaged_over_the_classes_present():
    truth = _masks()
    predicted = truth.clone()
    predicted[:, 2:6, 2:4] = 0  # half of each object called background
    # class 4: intersection 16, union 32 -> 0.5; background: intersection 96, union 96 + 16 = 112
    expected_miou = (0.5 + 96 / 112) / 2
    assert segmentation_metrics(predicted, truth, 11) == pytest.approx({"miou": expected_miou,
                                                                         "pixel_accuracy": (128 - 16) / 128})


def test_ignored_pixels_count_in_neither_metric():
    truth = _masks()
    truth[:, 0, :] = IGNORE
    predicted = truth.clone()
    predicted[:, 0, :] = 7  # wrong where nothing is counted
    assert segmentation_metrics(predicted, truth, 11) == {"miou": 1.0, "pixel_accuracy": 1.0}


def _one(box, label=3, score=0.9):
    return {"boxes": torch.tensor([box], dtype=torch.float32), "scores": torch.tensor([score]),
            "labels": torch.tensor([label])}


def _truth(box, label=3):
    return {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([label])}


def test_a_perfect_detection_scores_one():
    box = [10.0, 10.0, 40.0, 50.0]
    assert detection_metrics([_one(box)], [_truth(box)]) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


def test_a_shifted_box_scores_what_coco_says():
    """IoU 81/119 = 0.68: a match at the thresholds 0.50, 0.55, 0.60 and 0.65 of COCO's ten, so AP 1 there and 0 at
    the other six: mAP 0.4, mAP@.5 1, mAP@.75 0."""
    result = detection_metrics([_one([19.0, 0.0, 119.0, 100.0])], [_truth([0.0, 0.0, 100.0, 100.0])])
    assert result == pytest.approx({"map": 0.4, "map_50": 1.0, "map_75": 0.0})


def test_the_wrong_class_and_a_missed_object_score_nothing():
    box = [10.0, 10.0, 40.0, 50.0]
    assert detection_metrics([_one(box, label=4)], [_truth(box)])["map_50"] == 0.0
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    # one of two objects found, with precision 1: COCO's 101 recall points 0, 0.01, ..., 0.50 score 1, the rest 0
    assert detection_metrics([empty, _one(box)], [_truth(box), _truth(box)])["map_50"] == pytest.approx(51 / 101)
