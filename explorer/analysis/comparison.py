"""Two checkpoints over a whole test split: metrics, reliability, confusion, and the samples that flip.

``split_logits`` is one pass of a model over a split; the app's context keeps its result per checkpoint
file version and dataset, so comparing the same checkpoints again, or one of them with another, reuses it.
All metrics come from ``explorer.evaluate``, the same code that training and the evaluate CLI use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.evaluate import (
    CalibrationBins,
    calibration_bins,
    classification_metrics,
    confusion_matrix,
    predict_logits,
)

__all__ = ["Comparison", "ModelReport", "compare_reports", "model_report", "split_logits"]


def split_logits(checkpoint: Checkpoint, dataset: Dataset, split: str = "test") -> Tensor:
    """Logits [N, K] of a checkpoint on a dataset split, on the CPU."""
    return predict_logits(checkpoint.model, dataset, dataset.split(split)[0]).cpu()


@dataclass(frozen=True)
class ModelReport:
    """One model on one split."""

    metrics: dict[str, float]  # accuracy, nll, ece, brier, true_class_confidence
    bins: CalibrationBins
    confusion: Tensor  # [K, K] counts, row = true class
    probabilities: Tensor  # [N, K]
    predicted: Tensor  # [N]
    confidence: Tensor  # [N] max softmax probability
    correct: Tensor  # [N] bool


def model_report(logits: Tensor, labels: Tensor, num_classes: int) -> ModelReport:
    """Metrics, reliability bins and confusion matrix of logits [N, K] against labels [N]."""
    probabilities = F.softmax(logits.float(), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == labels
    return ModelReport(classification_metrics(logits, labels), calibration_bins(confidence, correct),
                       confusion_matrix(predicted, labels, num_classes), probabilities, predicted, confidence, correct)


@dataclass(frozen=True)
class Comparison:
    a: ModelReport
    b: ModelReport
    confusion_difference: Tensor  # [K, K] b.confusion - a.confusion
    fixed: Tensor  # indices where A is wrong and B is right
    broken: Tensor  # indices where A is right and B is wrong


def compare_reports(a: ModelReport, b: ModelReport) -> Comparison:
    """Differences between two reports on the same samples."""
    if a.correct.shape != b.correct.shape:
        raise ValueError(f"the reports cover different samples ({len(a.correct)} vs {len(b.correct)})")
    fixed = torch.nonzero(~a.correct & b.correct).flatten()
    broken = torch.nonzero(a.correct & ~b.correct).flatten()
    return Comparison(a, b, b.confusion - a.confusion, fixed, broken)
