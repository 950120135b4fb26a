"""Metrics over a dataset split: accuracy, NLL, ECE, Brier, reliability bins, confusion matrix.

``python -m explorer.evaluate CHECKPOINT [--dataset NAME] [--split test]`` prints them for a checkpoint.

ECE: predictions are binned by max-softmax confidence into ``n_bins`` equal-width bins (lo, hi] over
[0, 1] (15 by default); ECE = sum over bins of (bin size / N) x |accuracy - mean confidence|.
Brier: mean over samples of sum_k (p_k - onehot_k)^2 (the multi-class form, 0 is perfect, 2 the worst).
Training, the CLI and the app all compute metrics here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.data import Dataset, DatasetError, load_dataset

__all__ = ["CalibrationBins", "calibration_bins", "classification_metrics", "confusion_matrix", "predict_logits"]

ECE_BINS = 15


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits [N, K] of ``model`` (in eval mode) on uint8 images, normalised as the dataset says."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = [model(dataset.normalize(images[i:i + batch_size].to(device))).float()
               for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics of a reliability diagram; empty bins have count 0 and NaN means."""

    edges: list[float]  # n_bins + 1 edges over [0, 1]
    count: list[int]
    accuracy: list[float]
    confidence: list[float]
    ece: float


def calibration_bins(confidence: Tensor, correct: Tensor, n_bins: int = ECE_BINS) -> CalibrationBins:
    """Bin max-softmax confidences into equal-width bins (lo, hi] and compute the ECE from them."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; got {n_bins}")
    confidence = confidence.detach().double().cpu().flatten()
    correct = correct.detach().double().cpu().flatten()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) puts c in bin i when edges[i] < c <= edges[i+1]; 0 goes to the first bin.
    which = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(which, minlength=n_bins).double()
    acc_sum = torch.bincount(which, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(which, weights=confidence, minlength=n_bins)
    accuracy = acc_sum / count
    mean_conf = conf_sum / count
    n = max(len(confidence), 1)
    ece = float(((count / n) * (accuracy - mean_conf).abs()).nan_to_num(0.0).sum())
    return CalibrationBins(edges.tolist(), count.long().tolist(), accuracy.tolist(), mean_conf.tolist(), ece)


def classification_metrics(logits: Tensor, labels: Tensor, n_bins: int = ECE_BINS) -> dict[str, float]:
    """accuracy, nll, ece, brier and mean true-class confidence (fractions, not percent)."""
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    probs = F.softmax(logits, dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted == labels
    onehot = F.one_hot(labels, logits.shape[1]).float()
    return {
        "accuracy": float(correct.float().mean()),
        "nll": float(F.cross_entropy(logits, labels)),
        "ece": calibration_bins(confidence, correct, n_bins).ece,
        "brier": float(((probs - onehot) ** 2).sum(dim=1).mean()),
        "true_class_confidence": float(probs.gather(1, labels[:, None]).mean()),
    }


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts [K, K]: row = true class, column = predicted class."""
    flat = labels.long().cpu() * num_classes + predicted.long().cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _parser() -> argparse.ArgumentParser:
    from explorer.argparsing import OneLineParser

    parser = OneLineParser(prog="python -m explorer.evaluate",
                           description="Print a checkpoint's accuracy, NLL, ECE with its reliability bins, and Brier "
                                       "score on a dataset split; --json adds the confusion matrix.")
    parser.add_argument("checkpoint", help="a checkpoint folder (model.safetensors + card.json) or .safetensors file")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the one in the model card)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--data-root", default="data", help="folder holding CIFAR (default: data)")
    parser.add_argument("--image-size", type=int, default=None, help="for imagefolder: (default: the card's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table: the metrics, "
                                                            "the reliability bins and the confusion matrix")
    return parser


def _report(run: dict[str, Any], logits: Tensor, labels: Tensor, as_json: bool) -> str:
    """The metrics of ``logits`` as the CLI prints them, after what was measured (``run``: checkpoint, dataset,
    split): a table (with the reliability bins that hold predictions), or one JSON object that also holds every bin
    (an empty bin's means are null) and the confusion matrix (row: true class, column: predicted)."""
    metrics = classification_metrics(logits, labels)
    confidence, predicted = F.softmax(logits.float(), dim=1).max(dim=1)
    bins = calibration_bins(confidence, predicted == labels)
    if as_json:
        reliability = {"edges": bins.edges, "count": bins.count,
                       "accuracy": [None if v != v else v for v in bins.accuracy],
                       "confidence": [None if v != v else v for v in bins.confidence]}
        confusion = confusion_matrix(predicted, labels, logits.shape[1]).tolist()
        return json.dumps({**run, "n": len(labels), **metrics, "reliability": reliability,
                           "confusion_matrix": confusion})
    lines = [f"{run['checkpoint']}  on {run['dataset']} {run['split']} ({len(labels)} images)",
             f"  accuracy  {100 * metrics['accuracy']:.2f} %", f"  NLL       {metrics['nll']:.4f}",
             f"  ECE       {100 * metrics['ece']:.2f} %  ({ECE_BINS} equal-width bins)",
             f"  Brier     {metrics['brier']:.4f}", "  reliability (bins that hold predictions):",
             "    confidence      images  accuracy  mean confidence"]
    for lo, hi, n, acc, conf in zip(bins.edges[:-1], bins.edges[1:], bins.count, bins.accuracy, bins.confidence,
                                    strict=True):
        if n:
            lines.append(f"    ({lo:.3f}, {hi:.3f}]  {n:6d}  {100 * acc:6.2f} %  {100 * conf:6.2f} %")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    from explorer.checkpoints import CheckpointError, load_checkpoint
    from explorer.device import resolve_device

    args = _parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        ckpt = load_checkpoint(args.checkpoint, device)
        card = ckpt.card
        image_size = args.image_size or int(card["image_size"][0])
        dataset = load_dataset(args.dataset or card["dataset"], args.data_root, False, image_size)
        check_compatible(card, dataset)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"explorer.evaluate: error: {exc}", file=sys.stderr)
        return 2
    images, labels = dataset.split(args.split)
    run = {"checkpoint": str(ckpt.path), "dataset": dataset.name, "split": args.split}
    print(_report(run, predict_logits(ckpt.model, dataset, images), labels, args.json))
    return 0


def check_compatible(card: dict, dataset: Dataset) -> None:
    """Refuse a checkpoint whose class count, channels or image size does not match the dataset."""
    problems = []
    if int(card["num_classes"]) != dataset.num_classes:
        problems.append(f"{card['num_classes']} classes vs {dataset.num_classes}")
    if int(card["in_channels"]) != dataset.channels:
        problems.append(f"{card['in_channels']} input channels vs {dataset.channels}")
    if tuple(card["image_size"]) != dataset.image_size:
        problems.append(f"image size {tuple(card['image_size'])} vs {dataset.image_size}")
    if problems:
        raise ValueError(f"checkpoint ({card['model']} trained on {card['dataset']}) does not match dataset "
                         f"{dataset.name}: {'; '.join(problems)}")


if __name__ == "__main__":
    sys.exit(_main())
