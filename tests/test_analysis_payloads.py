"""The JSON of every endpoint, built without Gradio: exact keys, JSON types, and values equal to the analysis'.

Two small_cnn models with fixed random weights on the 8x8 digits stand in for models A and B: the payloads must
carry whatever numbers the analysis computed, trained or not.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.analysis.cam import ModelCam, explain
from explorer.analysis.claims import compare_claims
from explorer.analysis.comparison import compare_reports, model_report, split_logits
from explorer.analysis.evidence import TeacherCheck
from explorer.analysis.figures import gap_scatter
from explorer.analysis.pairs import confidence_gaps, gap_statistics, swap_pair
from explorer.analysis.payloads import (
    COMPARE_METRICS,
    compare_payload,
    compare_table,
    evidence_table,
    gap_table,
    gap_text,
    gaps_payload,
    gradcam_payload,
    runs_payload,
    swap_pair_payload,
    top_classes,
)
from explorer.checkpoints import Checkpoint
from explorer.evaluate import classification_metrics
from explorer.models import build_model
from explorer.training.runfolder import RUN_TABLE_HEADERS, RunInfo

SCORE_KEYS = {"checkpoint", "original_a", "original_b", "swapped_a", "swapped_b", "teacher", "kd", "tie"}


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, Checkpoint]:
    chosen = {}
    for seed, name in ((0, "A · ce"), (1, "B · ips")):
        torch.manual_seed(seed)
        chosen[name] = Checkpoint(build_model("small_cnn", 1, 10).eval(), {"method": name[4:]},
                                  Path(f"/checkpoints/{name[4:]}"))
    return chosen


def _models(checkpoints):
    return {name: c.model for name, c in checkpoints.items()}


def _strict_json(payload) -> None:
    """The payload survives JSON unchanged: plain types only, no NaN."""
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


def test_swap_pair_payload(digits, checkpoints):
    a, b = (int(i) for i in torch.nonzero(digits.test_labels == 4).flatten()[:2])
    pair = swap_pair(digits, digits.test_images[a], digits.test_images[b], 4, 2, 0.5, 7, _models(checkpoints),
                     anchor=a)
    sources = {"source": "test", "test_index": a}, {"source": "upload", "file": "b.png"}
    payload = swap_pair_payload(digits, pair, 0.5, 7, *sources, checkpoints, ["upload b: resized"])
    _strict_json(payload)
    assert set(payload) == {"dataset", "class", "label", "patch_size", "swap_ratio", "seed", "a", "b", "grid",
                            "swapped_patches", "mask", "image_shape", "models", "notes"}
    assert (payload["dataset"], payload["class"], payload["label"], payload["patch_size"]) == ("digits", "4", 4, 2)
    assert (payload["swap_ratio"], payload["seed"], payload["a"], payload["b"]) == (0.5, 7, *sources)
    assert payload["grid"] == [4, 4] and payload["swapped_patches"] == 8 == np.array(payload["mask"]).sum()
    assert payload["mask"] == pair.mask.int().tolist() and payload["image_shape"] == [1, 8, 8]
    assert payload["notes"] == ["upload b: resized"] and list(payload["models"]) == list(checkpoints)
    for name, scores in payload["models"].items():
        assert set(scores) == SCORE_KEYS and scores["checkpoint"] == f"checkpoints/{name[4:]}"  # a public name
        expected = pair.scores[name]
        assert [scores[k] for k in ("original_a", "original_b", "swapped_a", "swapped_b", "kd")] == [
            expected.original_a, expected.original_b, expected.swapped_a, expected.swapped_b, expected.kd]
        assert scores["teacher"] == ("a" if scores["swapped_a"] >= scores["swapped_b"] else "b")
        assert scores["tie"] == (scores["swapped_a"] == scores["swapped_b"])


@pytest.fixture(scope="module")
def gaps(digits, checkpoints):
    return confidence_gaps(digits, _models(checkpoints), 40, 2, 0.5, seed=1)


def test_gaps_payload(digits, checkpoints, gaps):
    stats = {name: gap_statistics(gaps.gap(name), gaps.labels, gaps.teacher_is_a[name], 10) for name in checkpoints}
    payload = gaps_payload(digits, gaps, stats, "all classes", 2, 0.5, 1, checkpoints)
    _strict_json(payload)
    assert set(payload) == {"dataset", "n_pairs", "class", "patch_size", "swap_ratio", "seed", "models", "pairs"}
    assert [payload[k] for k in ("dataset", "n_pairs", "class", "patch_size", "swap_ratio", "seed")] == [
        "digits", 40, "all classes", 2, 0.5, 1]
    assert payload["pairs"]["anchor"] == gaps.anchors.tolist() and payload["pairs"]["label"] == gaps.labels.tolist()
    assert payload["pairs"]["partner"] == gaps.partners.tolist()
    for name, model in payload["models"].items():
        assert set(model) == {"checkpoint", "mean_gap", "median_gap", "a_teaches", "b_teaches", "ties", "mean_kd",
                              "class_mean_gap"}
        conf_a, conf_b = gaps.confidence_a[name].double(), gaps.confidence_b[name].double()
        assert model["mean_gap"] == pytest.approx(float((conf_a - conf_b).abs().mean()), rel=1e-6)
        assert model["a_teaches"] == pytest.approx(float((conf_a > conf_b).double().mean()))
        assert model["b_teaches"] == pytest.approx(float((conf_a < conf_b).double().mean()))
        assert model["ties"] == pytest.approx(float((conf_a == conf_b).double().mean()))
        assert model["mean_kd"] == pytest.approx(float(gaps.kd[name].mean()))
        assert list(model["class_mean_gap"]) == list(digits.class_names)
        for label, mean in enumerate(model["class_mean_gap"].values()):
            chosen = gaps.labels == label
            assert mean is None if not chosen.any() else mean == pytest.approx(float(gaps.gap(name)[chosen].mean()))
        pairs = payload["pairs"][name]
        assert set(pairs) == {"confidence_a", "confidence_b", "teacher_is_a", "kd"}
        assert pairs["confidence_a"] == [round(float(v), 4) for v in conf_a]
        assert pairs["teacher_is_a"] == gaps.teacher_is_a[name].tolist() and len(pairs["kd"]) == 40


def test_gap_table_lists_the_largest_gaps_first(digits, checkpoints, gaps):
    table = gap_table(digits, gaps, rows=5)
    assert list(table) == ["class", "test # a", "test # b", "gap A · ce", "teacher A · ce", "gap B · ips",
                           "teacher B · ips"]
    largest = torch.maximum(gaps.gap("A · ce"), gaps.gap("B · ips"))
    def number(text):  # "< 0.001": a gap too small for 3 decimals
        return 0.0 if text.startswith("<") else float(text)

    shown = [max(number(a), number(b)) for a, b in zip(table["gap A · ce"], table["gap B · ips"], strict=True)]
    assert len(shown) == 5 and shown == sorted(shown, reverse=True)
    assert table["gap A · ce"][0] == f"{float(gaps.gap('A · ce')[largest.argmax()]):.3f}"
    assert shown[0] == round(float(largest.max()), 3)
    for row, anchor in enumerate(table["test # a"]):
        k = gaps.anchors.tolist().index(anchor)
        assert table["test # b"][row] == int(gaps.partners[k]) and table["class"][row] == str(int(gaps.labels[k]))
        tie = bool(gaps.confidence_a["B · ips"][k] == gaps.confidence_b["B · ips"][k])
        assert table["teacher B · ips"][row] == ("tie" if tie else "a′" if gaps.teacher_is_a["B · ips"][k] else "b′")


def test_gaps_are_shown_alike_and_only_a_tie_reads_as_0():
    """Issue 24: the table showed gap 0 with teacher a′ beside gap 0 with "tie", and "1" beside "0.999"."""
    assert [gap_text(g) for g in (1.0, 0.9994, 0.0, 0.0004, 0.0005)] == ["1.000", "0.999", "0.000", "< 0.001",
                                                                         "0.001"]


def test_gap_scatter_names_every_kind_of_point_in_its_legend():
    """Issue 24: model A (the first panel) had no tie, so the legend had no "tie" entry though B's pairs tie."""
    figure = gap_scatter({"A": [0.9, 0.2], "B": [0.5, 0.7]}, {"A": [0.1, 0.8], "B": [0.5, 0.6]},
                         {"A": [True, False], "B": [True, True]}, ["p0", "p1"])
    legend = [(trace.name, len(trace.x)) for trace in figure.data if trace.showlegend]
    assert legend == [("a′ teaches", 1), ("b′ teaches", 1), ("tie (a′ by the rule)", 1)]


def test_evidence_table_tells_apart_what_its_teachers_tell_apart():
    """Issue 24: "1.000000 / 1.000000" beside predicted teacher b′, and a sum shown as "−0.000000"."""
    check = TeacherCheck(torch.ones(2, 2, dtype=torch.bool), original_a=0.99999990, original_b=0.99999992,
                         change_a=-3.1e-8, change_b=0.0, actual_a=0.999999, actual_b=0.9999991, actual_teacher="b",
                         agrees=True)
    table = evidence_table({"A": check})
    assert table["Σ Δ conf a′"] == ["−3.1e−08"] and table["Σ Δ conf b′"] == ["0"]
    assert table["predicted conf a′ / b′"] == ["0.99999987 / 0.99999992"] and table["predicted teacher"] == ["b′"]
    assert table["conf a′ / b′ (model)"] == ["0.9999990 / 0.9999991"]
    close = evidence_table({"A": TeacherCheck(check.mask, 1.0, 1.0, 0.0, -1e-12, 1.0, 1.0, "a", None)})
    assert close["predicted conf a′ / b′"] == ["1.00000000 / 1.00000000 (a′ higher by 1.0e−12)"]
    assert close["Σ Δ conf b′"] == ["−1.0e−12"] and close["predicted teacher"] == ["a′"]


def test_gradcam_payload_and_top_classes(digits, checkpoints):
    inputs = digits.normalize(digits.test_images[3:4])
    true_label = int(digits.test_labels[3])
    cams = {name: explain(c.model, inputs, true_label if name.startswith("A") else None, method="GradCAM")
            for name, c in checkpoints.items()}
    source = {"source": "test", "test_index": 3}
    payload = gradcam_payload(digits, source, true_label, "GradCAM", "true class", cams, checkpoints, [])
    _strict_json(payload)
    assert set(payload) == {"dataset", "source", "test_index", "true_class", "method", "target", "models", "notes"}
    assert payload["true_class"] == digits.class_names[true_label] and payload["test_index"] == 3
    for name, model in payload["models"].items():
        result = cams[name]
        assert set(model) == {"checkpoint", "layer", "target_class", "predicted", "top3", "cam_shape", "cam_min",
                              "cam_max", "cam_mean", "cam_peak"}
        assert model["layer"] == "block3" and model["predicted"] == int(result.probabilities.argmax())
        assert model["target_class"] == (true_label if name.startswith("A") else model["predicted"])
        assert model["cam_shape"] == [8, 8] and model["cam_max"] == float(result.cam.max())
        assert model["cam_peak"] == list(np.unravel_index(result.cam.argmax(), (8, 8)))  # the first maximum
        assert 0 <= model["cam_min"] <= model["cam_mean"] <= model["cam_max"] <= 1
        probabilities = sorted(result.probabilities.tolist(), reverse=True)[:3]
        assert [p for _, p in model["top3"]] == pytest.approx(probabilities)
        assert model["top3"][0][0] == digits.class_names[model["predicted"]]
        assert [[k, v] for k, v in top_classes(result.probabilities, digits.class_names).items()] == model["top3"]
    cam = np.zeros((8, 6), np.float32)
    cam[1, 5], cam[4, 0] = 1.0, 0.5  # a known map: peak at row 1, column 5
    known = {"A · ce": ModelCam("block1", torch.tensor([0.1] * 9 + [0.1]), 0, 7, cam)}
    upload = gradcam_payload(digits, {"source": "upload", "file": "x.png"}, None, "LayerCAM", "7", known,
                             checkpoints, ["resized"])
    assert upload["true_class"] == "unknown" and upload["file"] == "x.png" and upload["notes"] == ["resized"]
    summary = upload["models"]["A · ce"]
    assert (summary["cam_peak"], summary["cam_shape"], summary["layer"], summary["target_class"]) == (
        [1, 5], [8, 6], "block1", 7)
    assert (summary["cam_min"], summary["cam_max"], summary["cam_mean"]) == (0.0, 1.0, pytest.approx(1.5 / 48))
    assert top_classes(torch.tensor([0.2, 0.8]), ["cat", "dog"]) == {"dog": pytest.approx(0.8),
                                                                      "cat": pytest.approx(0.2)}


def test_compare_payload_and_table(digits, checkpoints):
    labels = digits.test_labels
    reports = {name: model_report(split_logits(c, digits), labels, 10) for name, c in checkpoints.items()}
    comparison = compare_reports(*reports.values())
    claims = compare_claims("A · ce", "B · ips", *reports.values(), labels)
    payload = compare_payload(digits, reports, comparison, checkpoints, claims)
    _strict_json(payload)  # untrained models leave reliability bins empty: their NaN means must become null
    assert set(payload) == {"dataset", "n", "models", "confusion_difference", "a_wrong_b_right", "a_right_b_wrong",
                            "claims"}
    assert payload["claims"] == [{"metric": c.metric, "value_a": c.value_a, "value_b": c.value_b, "text": c.text,
                                  "difference_shown": c.difference_shown} for c in claims]
    assert payload["n"] == len(labels) and payload["dataset"] == "digits"
    assert payload["a_wrong_b_right"] == comparison.fixed.tolist()
    assert payload["a_right_b_wrong"] == comparison.broken.tolist()
    assert payload["confusion_difference"] == (reports["B · ips"].confusion - reports["A · ce"].confusion).tolist()
    for name, model in payload["models"].items():
        expected = classification_metrics(split_logits(checkpoints[name], digits), labels)
        assert set(model) == {"checkpoint", *expected, "reliability", "confusion"}
        assert {k: model[k] for k in expected} == pytest.approx(expected)
        bins = model["reliability"]
        assert set(bins) == {"edges", "count", "accuracy", "confidence"} and sum(bins["count"]) == len(labels)
        empty = [i for i, c in enumerate(bins["count"]) if c == 0]
        assert empty and [i for i, v in enumerate(bins["accuracy"]) if v is None] == empty
        assert np.array(model["confusion"]).sum() == len(labels)
    table = compare_table(reports)
    assert list(table) == ["metric", "A · ce", "B · ips", "B − A"]
    assert table["metric"] == [title for _, title, _ in COMPARE_METRICS]
    accuracy = {name: payload["models"][name]["accuracy"] for name in reports}
    assert table["A · ce"][0] == round(100 * accuracy["A · ce"], 4)
    assert table["B − A"][0] == round(100 * (accuracy["B · ips"] - accuracy["A · ce"]), 4)
    assert all(not math.isnan(v) for column in list(table.values())[1:] for v in column)


def test_runs_payload(tmp_path):
    info = RunInfo(run_id="r1", method="ips", dataset="digits", model="small_cnn", state="finished", message="done",
                   progress=1.0, epoch=2, epochs=2, device="cpu", processes=1, gpus=(), best_test_accuracy=0.9,
                   images_per_s=None, eta_s=None, started=0.0, path=tmp_path)
    payload = runs_payload([info, info])
    _strict_json(payload)
    assert payload == {"headers": list(RUN_TABLE_HEADERS), "data": [info.row(), info.row()]}
    assert dict(zip(payload["headers"], payload["data"][0], strict=True))["best test acc"] == "90.0 %"
    assert runs_payload([]) == {"headers": list(RUN_TABLE_HEADERS), "data": []}
