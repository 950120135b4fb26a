"""The data each endpoint of the app returns: JSON-ready dicts and tables, built from the analysis results.

One function per answer, Gradio-free, so a test checks a schema without starting the app and a change to what
an endpoint returns is made here. Numbers are plain Python floats and ints (JSON has no tensors), rounded
only where a table or a long per-pair list shows them, and a NaN becomes null (JSON has no NaN).

- ``swap_pair_payload``: /swap_pair (and /swap_class, /random_pair, /swap_dataset, which end with it);
- ``gaps_payload`` and ``gap_table``: /confidence_gaps;
- ``gradcam_payload`` and ``top_classes``: /gradcam;
- ``compare_payload`` and ``compare_table``: /compare;
- ``runs_payload``: /runs (and the Train tab's runs table).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explorer.analysis.cam import ModelCam
from explorer.analysis.comparison import Comparison, ModelReport
from explorer.analysis.pairs import GapStatistics, PairGaps, SwappedPair
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.training.runfolder import RUN_TABLE_HEADERS, RunInfo

__all__ = ["COMPARE_METRICS", "GAP_TABLE_ROWS", "compare_payload", "compare_table", "gap_table", "gaps_payload",
           "gradcam_payload", "runs_payload", "swap_pair_payload", "top_classes"]

GAP_TABLE_ROWS = 20  # the pairs with the largest gaps that the gap table lists; the JSON lists them all
# (metric key, row title, scale) of the Compare tab's metrics table
COMPARE_METRICS = (("accuracy", "accuracy (%)", 100), ("nll", "NLL", 1), ("ece", "ECE (%, 15 bins)", 100),
                   ("brier", "Brier score", 1), ("true_class_confidence", "mean true-class confidence", 1))


def _round(values: Tensor, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def _finite(values: Iterable[float]) -> list[float | None]:
    """JSON has no NaN: an empty reliability bin's accuracy and confidence become null."""
    return [None if math.isnan(v) else v for v in values]


# --------------------------------------------------------------------------------------------------
# Patch swap
# --------------------------------------------------------------------------------------------------
def swap_pair_payload(dataset: Dataset, pair: SwappedPair, swap_ratio: float, seed: int, source_a: dict[str, Any],
                      source_b: dict[str, Any], checkpoints: Mapping[str, Checkpoint],
                      notes: list[str]) -> dict[str, Any]:
    """One swapped pair: where a and b came from, the exchanged positions, and every model's scores of it."""
    return {
        "dataset": dataset.name, "class": dataset.class_names[pair.label], "label": pair.label,
        "patch_size": pair.patch_size, "swap_ratio": float(swap_ratio), "seed": seed,
        "a": source_a, "b": source_b, "grid": list(pair.mask.shape), "swapped_patches": int(pair.mask.sum()),
        "mask": pair.mask.int().tolist(), "image_shape": list(pair.originals.shape[1:]),
        "models": {name: {"checkpoint": str(checkpoints[name].path), **vars(score)}
                   for name, score in pair.scores.items()},
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------------
# Confidence gaps
# --------------------------------------------------------------------------------------------------
def gaps_payload(dataset: Dataset, gaps: PairGaps, stats: Mapping[str, GapStatistics], class_name: str,
                 patch_size: int, swap_ratio: float, seed: int,
                 checkpoints: Mapping[str, Checkpoint]) -> dict[str, Any]:
    """Many pairs: per model the gap statistics, per pair both views' confidences, the teacher and the KL term."""
    names = list(stats)
    return {
        "dataset": dataset.name, "n_pairs": len(gaps.anchors), "class": class_name, "patch_size": patch_size,
        "swap_ratio": float(swap_ratio), "seed": seed,
        "models": {name: {"checkpoint": str(checkpoints[name].path), "mean_gap": s.mean, "median_gap": s.median,
                          "a_teaches": s.a_teaches, "mean_kd": float(gaps.kd[name].mean()),
                          "class_mean_gap": dict(zip(dataset.class_names, s.class_mean, strict=True))}
                   for name, s in stats.items()},
        "pairs": {"anchor": gaps.anchors.tolist(), "partner": gaps.partners.tolist(), "label": gaps.labels.tolist(),
                  **{name: {"confidence_a": _round(gaps.confidence_a[name]),
                            "confidence_b": _round(gaps.confidence_b[name]),
                            "teacher_is_a": gaps.teacher_is_a[name].tolist(), "kd": _round(gaps.kd[name])}
                     for name in names}},
    }


def gap_table(dataset: Dataset, gaps: PairGaps, rows: int = GAP_TABLE_ROWS) -> dict[str, list]:
    """The ``rows`` pairs with the largest gap under any model, largest first: class, test indices, gaps, teachers.

    The first three columns (class, test # a, test # b) are what a click on a row opens in the Patch swap tab.
    """
    names = list(gaps.confidence_a)
    largest = torch.stack([gaps.gap(name) for name in names]).amax(0).argsort(descending=True)[:rows]
    table = {"class": [dataset.class_names[int(gaps.labels[i])] for i in largest],
             "test # a": gaps.anchors[largest].tolist(), "test # b": gaps.partners[largest].tolist()}
    for name in names:
        table[f"gap {name}"] = _round(gaps.gap(name)[largest], 3)
        table[f"teacher {name}"] = ["a′" if t else "b′" for t in gaps.teacher_is_a[name][largest].tolist()]
    return table


# --------------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------------
def top_classes(probabilities: Tensor, class_names: list[str], k: int = 3) -> dict[str, float]:
    """The ``k`` most probable classes by name, most probable first, with their probabilities."""
    values, order = probabilities.topk(min(k, len(class_names)))
    return {class_names[int(i)]: float(v) for v, i in zip(values, order, strict=True)}


def gradcam_payload(dataset: Dataset, source: dict[str, Any], true_label: int | None, method: str, target: str,
                    cams: Mapping[str, ModelCam], checkpoints: Mapping[str, Checkpoint],
                    notes: list[str]) -> dict[str, Any]:
    """One image: where it came from, its true class, and per model the prediction and a summary of its CAM."""
    models = {}
    for name, result in cams.items():
        cam = result.cam
        peak = np.unravel_index(int(cam.argmax()), cam.shape)
        models[name] = {
            "checkpoint": str(checkpoints[name].path), "layer": result.layer, "target_class": result.target_class,
            "predicted": result.predicted,
            "top3": [[k, v] for k, v in top_classes(result.probabilities, dataset.class_names).items()],
            "cam_shape": list(cam.shape), "cam_min": float(cam.min()), "cam_max": float(cam.max()),
            "cam_mean": float(cam.mean()), "cam_peak": [int(peak[0]), int(peak[1])]}
    truth = "unknown" if true_label is None else dataset.class_names[true_label]
    return {"dataset": dataset.name, **source, "true_class": truth, "method": method, "target": target,
            "models": models, "notes": notes}


# --------------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------------
def compare_payload(dataset: Dataset, reports: Mapping[str, ModelReport], comparison: Comparison,
                    checkpoints: Mapping[str, Checkpoint]) -> dict[str, Any]:
    """Two models over the test split: metrics, reliability bins, confusion matrices, and the samples that flip."""
    return {
        "dataset": dataset.name, "n": len(dataset.test_labels),
        "models": {name: {"checkpoint": str(checkpoints[name].path), **r.metrics,
                          "reliability": {"edges": r.bins.edges, "count": r.bins.count,
                                          "accuracy": _finite(r.bins.accuracy),
                                          "confidence": _finite(r.bins.confidence)},
                          "confusion": r.confusion.tolist()}
                   for name, r in reports.items()},
        "confusion_difference": comparison.confusion_difference.tolist(),
        "a_wrong_b_right": comparison.fixed.tolist(), "a_right_b_wrong": comparison.broken.tolist(),
    }


def compare_table(reports: Mapping[str, ModelReport]) -> dict[str, list]:
    """The metrics table: one row per ``COMPARE_METRICS`` entry, a column per model (A, B) and B − A."""
    (name_a, a), (name_b, b) = reports.items()
    return {"metric": [title for _, title, _ in COMPARE_METRICS],
            name_a: [round(scale * a.metrics[key], 4) for key, _, scale in COMPARE_METRICS],
            name_b: [round(scale * b.metrics[key], 4) for key, _, scale in COMPARE_METRICS],
            "B − A": [round(scale * (b.metrics[key] - a.metrics[key]), 4) for key, _, scale in COMPARE_METRICS]}


# --------------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------------
def runs_payload(infos: Iterable[RunInfo]) -> dict[str, list]:
    """The runs table as data: {"headers": RUN_TABLE_HEADERS, "data": one row of text per run, in the given order}."""
    return {"headers": list(RUN_TABLE_HEADERS), "data": [info.row() for info in infos]}
