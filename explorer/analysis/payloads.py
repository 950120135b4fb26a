"""The data each endpoint of the app returns: JSON-ready dicts and tables, built from the analysis results.

One function per answer, Gradio-free, so a test checks a schema without starting the app and a change to what
an endpoint returns is made here. Numbers are plain Python floats and ints (JSON has no tensors), rounded
only where a table or a long per-pair list shows them, and a NaN becomes null (JSON has no NaN). A model's
``checkpoint`` is its public name (``catalog.checkpoint_name``, e.g. ``checkpoints/mnist5k-small_cnn-ips``), never
a path on the server.

- ``swap_pair_payload``: /swap_pair (and /swap_class, /random_pair, /swap_dataset, which end with it);
- ``gaps_payload`` and ``gap_table``: /confidence_gaps;
- ``gradcam_payload`` and ``top_classes``: /gradcam;
- ``compare_payload`` and ``compare_table``: /compare;
- ``runs_payload``: /runs (and the Train tab's runs table);
- ``study_payload`` and the ``study_*_table`` functions: /study_results and the Study tab's tables;
- ``patch_evidence_payload``, ``evidence_table``, ``evidence_agreement_summary``: /patch_evidence and
  /evidence_agreement;
- ``faithfulness_payload`` and ``faithfulness_table``: /cam_faithfulness.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explorer.analysis.cam import ModelCam
from explorer.analysis.catalog import checkpoint_name
from explorer.analysis.claims import Claim, distinct
from explorer.analysis.comparison import Comparison, ModelReport
from explorer.analysis.evidence import EvidenceAgreement, PatchEvidence, TeacherCheck
from explorer.analysis.faithfulness import (
    HIGHER_IS_MORE_FAITHFUL,
    FaithfulnessComparison,
    ForeignCamMass,
)
from explorer.analysis.pairs import GapStatistics, PairGaps, SwappedPair
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.stats import MeanInterval, format_signed, mean_interval
from explorer.training.runfolder import RUN_TABLE_HEADERS, RunInfo
from explorer.training.study_results import StudyResults

__all__ = ["COMPARE_METRICS", "GAP_TABLE_ROWS", "STUDY_COLUMNS", "compare_payload", "compare_table",
           "evidence_agreement_summary", "evidence_table", "faithfulness_payload", "faithfulness_table",
           "foreign_share_difference", "gap_table", "gaps_payload", "gradcam_payload", "patch_evidence_payload",
           "runs_payload", "study_comparison_table", "study_payload", "study_runs_table", "study_summary_table",
           "swap_pair_payload", "top_classes"]
__all__ += ["STUDY_COMPARISON_HEADERS", "STUDY_RUNS_HEADERS", "STUDY_SUMMARY_HEADERS"]

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
        "models": {name: {"checkpoint": checkpoint_name(checkpoints[name].path), **vars(score)}
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
        "models": {name: {"checkpoint": checkpoint_name(checkpoints[name].path), "mean_gap": s.mean,
                          "median_gap": s.median, "a_teaches": s.a_teaches, "b_teaches": s.b_teaches, "ties": s.ties,
                          "mean_kd": float(gaps.kd[name].mean()),
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

    The first three columns (class, test # a, test # b: indices in the whole test split) are what a click on a
    row opens in the Patch swap tab. A teacher is a′, b′, or "tie" when both confidences are exactly equal; the
    gaps are shown alike (``gap_text``), so a gap that is not 0 never reads as 0 beside a teacher.
    """
    names = list(gaps.confidence_a)
    largest = torch.stack([gaps.gap(name) for name in names]).amax(0).argsort(descending=True)[:rows]
    table = {"class": [dataset.class_names[int(gaps.labels[i])] for i in largest],
             "test # a": gaps.anchors[largest].tolist(), "test # b": gaps.partners[largest].tolist()}
    for name in names:
        table[f"gap {name}"] = [gap_text(float(gap)) for gap in gaps.gap(name)[largest]]
        ties = (gaps.gap(name)[largest] == 0).tolist()
        table[f"teacher {name}"] = ["tie" if tie else "a′" if t else "b′"
                                    for t, tie in zip(gaps.teacher_is_a[name][largest].tolist(), ties, strict=True)]
    return table


def gap_text(gap: float, digits: int = 3) -> str:
    """A confidence gap with ``digits`` decimals, every row alike ("1.000", "0.999"); exactly 0 for a tie, and a gap
    too small for those decimals as "< 0.001", so only a tie reads as 0."""
    if gap != 0 and round(gap, digits) == 0:
        return f"< {10 ** -digits:.{digits}f}"
    return f"{gap:.{digits}f}"


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
            "checkpoint": checkpoint_name(checkpoints[name].path), "layer": result.layer,
            "target_class": result.target_class, "predicted": result.predicted,
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
                    checkpoints: Mapping[str, Checkpoint], claims: Sequence[Claim]) -> dict[str, Any]:
    """Two models over the test split: metrics, reliability bins, confusion matrices, the samples that flip, and
    the generated sentences about them (``claims.compare_claims``) with the numbers each is about."""
    return {
        "dataset": dataset.name, "n": len(dataset.test_labels),
        "models": {name: {"checkpoint": checkpoint_name(checkpoints[name].path), **r.metrics,
                          "reliability": {"edges": r.bins.edges, "count": r.bins.count,
                                          "accuracy": _finite(r.bins.accuracy),
                                          "confidence": _finite(r.bins.confidence)},
                          "confusion": r.confusion.tolist()}
                   for name, r in reports.items()},
        "confusion_difference": comparison.confusion_difference.tolist(),
        "a_wrong_b_right": comparison.fixed.tolist(), "a_right_b_wrong": comparison.broken.tolist(),
        "claims": [vars(claim) for claim in claims],
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


# --------------------------------------------------------------------------------------------------
# Study
# --------------------------------------------------------------------------------------------------
# (metric, column title, decimals) of the Study tab's tables, in METRICS order
STUDY_COLUMNS = (("accuracy", "test acc (%)", 2), ("nll", "test NLL", 4), ("ece", "test ECE (%)", 2),
                 ("brier", "test Brier", 4))
# The study tables' columns, also for the empty tables a page shows before a study is chosen (the runs table adds
# "SLURM" after "state" when the study has runs on SLURM)
STUDY_RUNS_HEADERS = ("setting", "seed", "run", "state", *(title for _, title, _ in STUDY_COLUMNS))
STUDY_SUMMARY_HEADERS = ("setting", "finished seeds", *(title for _, title, _ in STUDY_COLUMNS))
STUDY_COMPARISON_HEADERS = ("comparison", "setting − baseline", "metric", "Δ mean", "95 % CI", "seeds", "Δ per seed")


def _mean_std(summary: MeanInterval | None, digits: int) -> str:
    if summary is None:
        return "—"
    return f"{summary.mean:.{digits}f}" + ("" if summary.std is None else f" ± {summary.std:.{digits}f}")


def study_runs_table(results: StudyResults, states: Mapping[str, str],
                     jobs: Mapping[str, str] | None = None) -> dict[str, list]:
    """One row per (setting, seed), setting by setting: its run id, its state (``states`` by run id), its SLURM
    job's state when the study has runs on SLURM (``jobs`` by run id) and, once finished, its final test metrics."""
    spec = results.spec
    headers = list(STUDY_RUNS_HEADERS)
    if jobs:
        headers.insert(headers.index("state") + 1, "SLURM")
    table: dict[str, list] = {key: [] for key in headers}
    for setting in spec.settings:
        for seed in spec.seeds:
            run_id = spec.run_id(setting, seed)
            table["setting"].append(setting.label)
            table["seed"].append(seed)
            table["run"].append(run_id)
            table["state"].append(states.get(run_id, "not started"))
            if jobs:
                table["SLURM"].append(jobs.get(run_id, ""))
            for metric, title, digits in STUDY_COLUMNS:
                value = results.values[metric].get(setting.label, {}).get(seed)
                table[title].append(None if value is None else round(value, digits))
    return table


def study_summary_table(results: StudyResults) -> dict[str, list]:
    """Per setting: its finished seeds and mean ± std (sample std) of each metric over them."""
    table: dict[str, list] = {key: [] for key in STUDY_SUMMARY_HEADERS}
    for setting in results.spec.settings:
        table["setting"].append(setting.label)
        table["finished seeds"].append(len(results.values["accuracy"].get(setting.label, {})))
        for metric, title, digits in STUDY_COLUMNS:
            table[title].append(_mean_std(results.summary(metric, setting.label), digits))
    return table


def study_comparison_table(results: StudyResults) -> dict[str, list]:
    """Per comparison and metric: the paired per-seed difference setting − baseline, its mean, 95 % interval and
    seeds; "—" where no seed has both runs finished, "needs 2 seeds" where one seed gives no interval."""
    table: dict[str, list] = {key: [] for key in STUDY_COMPARISON_HEADERS}
    for comparison in results.spec.comparisons:
        for metric, title, digits in STUDY_COLUMNS:
            difference = results.difference(metric, comparison)
            table["comparison"].append(comparison.name)
            table["setting − baseline"].append(f"{comparison.setting} − {comparison.baseline}")
            table["metric"].append(title.removeprefix("test "))
            if difference is None:
                for key in ("Δ mean", "95 % CI", "Δ per seed"):
                    table[key].append("—")
                table["seeds"].append(0)
                continue
            table["Δ mean"].append(format_signed(difference.mean, digits))
            low, high = (format_signed(v, digits) if v is not None else "" for v in (difference.low, difference.high))
            table["95 % CI"].append(f"{low} to {high}" if difference.has_interval else "needs 2 seeds")
            table["seeds"].append(difference.n)
            table["Δ per seed"].append(", ".join(f"s{seed}: {format_signed(value, digits)}"
                                                 for seed, value in difference.per_seed.items()))
    return table


def study_payload(results: StudyResults, states: Mapping[str, str]) -> dict[str, Any]:
    """/study_results: ``StudyResults.to_json()`` plus every run's id and state, and how many of them finished."""
    runs = [{"run_id": results.spec.run_id(setting, seed), "setting": setting.label, "seed": seed,
             "state": states.get(results.spec.run_id(setting, seed), "not started")}
            for setting, seed in results.spec.runs()]
    return {**results.to_json(), "runs": runs, "total": len(runs), "finished": len(runs) - results.pending,
            "active": any(run["state"] in ("queued", "running") for run in runs)}


# --------------------------------------------------------------------------------------------------
# Patch evidence
# --------------------------------------------------------------------------------------------------
def evidence_table(checks: Mapping[str, TeacherCheck]) -> dict[str, list]:
    """Per model: what the summed single-patch evidence predicts for the exchanged positions, and what the model
    does with the real swapped views."""
    table: dict[str, list] = {key: [] for key in (
        "model", "positions exchanged", "Σ Δ conf a′", "Σ Δ conf b′", "predicted conf a′ / b′", "predicted teacher",
        "conf a′ / b′ (model)", "teacher (model)", "agree")}
    for name, check in checks.items():
        table["model"].append(name)
        table["positions exchanged"].append(int(check.mask.sum()))
        table["Σ Δ conf a′"].append(_change_text(check.change_a))
        table["Σ Δ conf b′"].append(_change_text(check.change_b))
        table["predicted conf a′ / b′"].append(_pair_text(check.predicted_a, check.predicted_b))
        table["predicted teacher"].append(_view(check.predicted_teacher))
        table["conf a′ / b′ (model)"].append(_pair_text(check.actual_a, check.actual_b))
        table["teacher (model)"].append(_view(check.actual_teacher) + (" (a tie: a′)" if check.actual_tie else ""))
        table["agree"].append({True: "yes", False: "no", None: "tie"}[check.agrees])
    return table


def _change_text(change: float, digits: int = 6) -> str:
    """A summed change with ``digits`` decimals and its sign; one too small for them in scientific notation
    ("−3.1e−08", not "−0.000000"), exactly 0 as "0"."""
    if change == 0:
        return "0"
    text = format_signed(change, digits) if round(change, digits) != 0 else f"{change:+.1e}"
    return text.replace("-", "−")


def _pair_text(p: float, q: float) -> str:
    """Two confidences with the decimals that tell them apart (``claims.distinct``); two that still read alike at
    the most decimals say which is higher, so the teacher beside them is not contradicted."""
    first, second = distinct(p, q, 6)
    if first == second and p != q:
        return f"{first} / {second} ({'a′' if p > q else 'b′'} higher by {abs(p - q):.1e})".replace("-", "−")
    return f"{first} / {second}"


def _view(teacher: str) -> str:
    return {"a": "a′", "b": "b′"}.get(teacher, teacher)


def patch_evidence_payload(dataset: Dataset, label: int, evidence: Mapping[str, PatchEvidence],
                           checks: Mapping[str, TeacherCheck], exchange: str,
                           checkpoints: Mapping[str, Checkpoint]) -> dict[str, Any]:
    """/patch_evidence: per model the single-position deltas and evidence, and the teacher check of the exchanged
    positions (``exchange`` says how they were chosen)."""
    return {"dataset": dataset.name, "class": dataset.class_names[label], "label": label, "exchange": exchange,
            "models": {name: {"checkpoint": checkpoint_name(checkpoints[name].path), **evidence[name].to_json(),
                              "check": checks[name].to_json()} for name in evidence}}


def evidence_agreement_summary(agreements: Mapping[str, EvidenceAgreement]) -> str:
    """Markdown: per model, how often the summed evidence picks the model's teacher, as a rate with its counts."""
    lines = []
    for name, result in agreements.items():
        decided = result.count - result.tie_count
        rate = "no decided pair" if result.rate is None else f"**{100 * result.rate:.1f} %**"
        lines.append(f"- **{name}**: {rate} ({result.agreement_count} of {decided} pairs; {result.tie_count} of "
                     f"{result.count} left out as ties, where the two swapped views' confidences are equal)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CAM faithfulness
# --------------------------------------------------------------------------------------------------
def _with_interval(summary: MeanInterval, digits: int = 4) -> str:
    if not summary.has_interval:
        return format_signed(summary.mean, digits)
    return (f"{format_signed(summary.mean, digits)} ({format_signed(summary.low, digits)} to "
            f"{format_signed(summary.high, digits)})")


def foreign_share_difference(a: ForeignCamMass, b: ForeignCamMass) -> MeanInterval:
    """B − A of the per-pair CAM share on swapped-in patches, over the pairs where neither map is all zero."""
    difference = b.pair_share - a.pair_share
    return mean_interval(difference[~np.isnan(difference)])


def faithfulness_table(comparison: FaithfulnessComparison, foreign: Mapping[str, ForeignCamMass]) -> dict[str, list]:
    """One row per metric (each ROAD percentile, the summaries, the CAM share on swapped-in patches): A and B with
    95 % intervals over the images (pairs), the paired difference B − A and which direction is more faithful."""
    (name_a, name_b), a, b = comparison.names, comparison.a, comparison.b
    rows: list[tuple[str, str, MeanInterval, MeanInterval, MeanInterval]] = []
    for i, p in enumerate(a.percentiles):
        for order, key in (("MoRF", "morf"), ("LeRF", "lerf")):
            values_a, values_b = getattr(a, key)[i], getattr(b, key)[i]
            rows.append((f"ROAD {order}, {100 - p} % imputed", "lower" if key == "morf" else "higher",
                         mean_interval(values_a), mean_interval(values_b), mean_interval(values_b - values_a)))
    scores_a, scores_b, differences = a.scores(), b.scores(), comparison.differences()
    for metric in ("ROAD combined", "CAM-mult confidence change"):
        rows.append((metric, "higher" if HIGHER_IS_MORE_FAITHFUL[metric] else "lower", mean_interval(scores_a[metric]),
                     mean_interval(scores_b[metric]), differences[metric]))
    if name_a in foreign and name_b in foreign:
        rows.append(("CAM share on swapped-in patches", "—", foreign[name_a].summary(), foreign[name_b].summary(),
                     foreign_share_difference(foreign[name_a], foreign[name_b])))
    return {"metric": [r[0] for r in rows], "more faithful": [r[1] for r in rows],
            name_a: [_with_interval(r[2]) for r in rows], name_b: [_with_interval(r[3]) for r in rows],
            "B − A": [_with_interval(r[4]) for r in rows]}


def faithfulness_payload(dataset: Dataset, comparison: FaithfulnessComparison, foreign: Mapping[str, ForeignCamMass],
                         checkpoints: Mapping[str, Checkpoint], settings: dict[str, Any]) -> dict[str, Any]:
    """/cam_faithfulness: the settings, per model ROAD and CAM-mult per image and the foreign CAM share per pair,
    the differences B − A and the sentence."""
    payload = {"dataset": dataset.name, **settings, **comparison.to_json()}
    for name, data in payload["models"].items():
        data["checkpoint"] = checkpoint_name(checkpoints[name].path)
        if name in foreign:
            data["foreign_cam_mass"] = foreign[name].to_json()
    names = comparison.names
    if all(name in foreign for name in names):
        payload["difference_b_minus_a"]["CAM share on swapped-in patches"] = foreign_share_difference(
            foreign[names[0]], foreign[names[1]]).to_json()
    return payload
