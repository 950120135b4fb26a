"""The patch-evidence sections' handlers, called directly with an AppContext on the demo checkpoints."""

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from explorer.analysis.evidence import check_teacher, evidence_agreement, evident_mask, patch_evidence
from explorer.analysis.pairs import class_test_index
from explorer.ui import evidence
from explorer.ui.context import AppContext
from explorer.ui.evidence import EXCHANGES, evidence_agreement_view, patch_evidence_view
from explorer.ui.gaps import ALL_CLASSES, MODEL_SETS
from explorer.ui.swap import show_pair
from tests.helpers import CE_DEMO, DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


@pytest.fixture(scope="module")
def pair(ctx):
    """The Patch swap tab's state of class 8, samples 3 and 7, 7-pixel patches, ratio 0.5, seed 0."""
    return show_pair(ctx, "mnist5k", CE, IPS, "8", 3, 7, None, None, 7, 0.5, 0).pair


def test_evidence_of_the_shown_pair_matches_the_analysis_for_both_models(ctx, pair):
    view = patch_evidence_view(ctx, CE, IPS, pair, EXCHANGES[0], 3)
    figure, table, summary, payload, slider = view.maps, view.table, view.summary, view.data, view.k
    mnist = ctx.dataset("mnist5k")
    a, b = (mnist.test_images[class_test_index(mnist, 8, rank)] for rank in (3, 7))
    models = {name: c.model for name, c in ctx.models(mnist, CE, IPS).items()}
    assert list(payload["models"]) == list(models) == ["A · ce", "B · ips"] and payload["class"] == "8"
    for row, (name, model) in enumerate(models.items()):
        expected = patch_evidence(model, mnist, a, b, 8, 7)  # the originals, swapped back from the tab's views
        got = payload["models"][name]
        assert np.array_equal(got["delta_a"], expected.delta_a.numpy())
        assert np.array_equal(got["evidence_for_a"], expected.evidence_for_a.numpy())
        check = check_teacher(model, mnist, expected, torch.from_numpy(pair["mask"]))
        assert got["check"] == check.to_json() and got["check"]["mask"] == pair["mask"].tolist()
        assert table["teacher (model)"][row].startswith(f"{check.actual_teacher}′")
        shown = table["Σ Δ conf a′"][row]  # 6 decimals; a sum too small for them in scientific notation
        assert float(shown.replace("−", "-")) == pytest.approx(check.change_a, rel=0.05, abs=5e-7)
        assert "0.000000" not in shown
        heat_a, heat_b = figure.data[6 * row + 1], figure.data[6 * row + 4]
        assert np.array_equal(heat_a.z, expected.delta_a.numpy()) and np.array_equal(heat_b.z, expected.delta_b)
        outline = figure.data[6 * row + 2]
        assert list(outline.x).count(None) == int(pair["mask"].sum())  # one square per exchanged position
    assert slider.maximum == 16 and slider.value == 3
    assert "exchanged: the swap's 8 random positions" in summary


def test_the_most_and_least_evident_patches_flip_the_teacher(ctx, pair):
    teachers = {}
    for exchange in EXCHANGES[1:]:
        view = patch_evidence_view(ctx, CE, IPS, pair, exchange, 8)
        table, summary, payload = view.table, view.summary, view.data
        mnist = ctx.dataset("mnist5k")
        for name, data in payload["models"].items():
            evidence = patch_evidence(ctx.models(mnist, CE, IPS)[name].model, mnist,
                                      *(mnist.test_images[class_test_index(mnist, 8, r)] for r in (3, 7)), 8, 7)
            expected = evident_mask(evidence, 8, most=exchange == EXCHANGES[1])
            assert data["check"]["mask"] == expected.tolist()
        teachers[exchange] = table["teacher (model)"][0]
        assert f"each model's 8 {'most' if exchange == EXCHANGES[1] else 'least'} evident positions" in summary
    assert teachers == {EXCHANGES[1]: "a′", EXCHANGES[2]: "b′"}  # model A's teacher follows the evidence


def test_evidence_refuses_what_it_cannot_show(ctx, pair):
    with pytest.raises(ValueError, match="show one in the Patch swap tab first"):
        patch_evidence_view(ctx, CE, IPS, None, EXCHANGES[0], 8)
    with pytest.raises(ValueError, match="exchange must be one of"):
        patch_evidence_view(ctx, CE, IPS, pair, "everything", 8)
    empty = patch_evidence_view(ctx, None, None, pair, EXCHANGES[0], 8)  # no model: a calm empty view, no error
    assert empty.maps is None and empty.table.empty and empty.data["models"] == {} and empty.k.value == 8
    assert "7x7-pixel patches. No model chosen: pick model A or B above" in empty.summary
    view = patch_evidence_view(ctx, None, IPS, pair, EXCHANGES[1], 99)
    assert list(view.data["models"]) == ["B · ips"] and view.k.value == 16  # k clipped to the grid
    assert sum(map(sum, view.data["models"]["B · ips"]["check"]["mask"])) == 16


def test_the_k_box_shows_the_k_drawn_and_comes_back_after_a_coarser_grid(ctx, pair):
    """Issue 24: k was clamped to 1 at 28-pixel patches (one position) and stayed 1 after going back to 7 pixels;
    and typing k with the swap's random positions changed nothing, so the box is offered only where k is used."""
    coarse = show_pair(ctx, "mnist5k", CE, IPS, "8", 3, 7, None, None, 28, 0.5, 0).pair
    one = patch_evidence_view(ctx, CE, IPS, coarse, EXCHANGES[1], 8)
    assert (one.k.maximum, one.k.value, one.asked_k) == (1, 1, 8) and one.k.interactive
    assert "each model's 1 most evident positions" in one.summary
    back = patch_evidence_view(ctx, CE, IPS, pair, EXCHANGES[1], one.asked_k)  # the redraw's k is the asked one
    assert (back.k.maximum, back.k.value, back.asked_k) == (16, 8, 8)
    assert "each model's 8 most evident positions" in back.summary
    random = patch_evidence_view(ctx, None, None, pair, EXCHANGES[0], 5)
    assert random.k.interactive is False and random.asked_k == 5


def test_evidence_agreement_over_the_gap_pairs_is_the_analysis_rate_and_is_cached(ctx, monkeypatch):
    args = (CE, IPS, "A and B", "3", 30, 7, 0.5, 1)
    view = evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, "mnist5k", *args, progress=lambda *a, **k: None)
    text, data = view.summary, view.data
    mnist = ctx.dataset("mnist5k")
    for name, checkpoint in ctx.models(mnist, CE, IPS).items():
        expected = evidence_agreement(checkpoint.model, mnist, 30, 7, 0.5, 1, label=3)
        got = data["models"][name]
        assert (got["count"], got["ties"], got["agreements"]) == (
            expected.count, expected.tie_count, expected.agreement_count)
        assert got["rate"] == expected.rate and {p["label"] for p in got["pairs"]} == {3}
        rate = "no decided pair" if expected.rate is None else f"**{100 * expected.rate:.1f} %**"
        assert f"**{name}**: {rate} ({expected.agreement_count} of {expected.count - expected.tie_count} pairs" in text
    def recompute(*args, **kwargs):
        raise AssertionError("answered again instead of from the cache")

    monkeypatch.setattr("explorer.ui.evidence.evidence_agreement", recompute)
    again = evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, "mnist5k", *args, progress=lambda *a, **k: None)
    assert again.summary == text and again.data == data
    only_b = evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, "mnist5k", CE, IPS, "B only", "3", 30, 7, 0.5, 1,
                                     progress=lambda *a, **k: None).data
    assert list(only_b["models"]) == ["B · ips"] and only_b["models"]["B · ips"] == data["models"]["B · ips"]
    with pytest.raises(ValueError, match="models must be one of"):
        evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, "mnist5k", CE, IPS, "both", "3", 30, 7, 0.5, 1)


def test_a_checkpoint_replaced_on_disk_is_analysed_again(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(IPS_DEMO, runs / "copy")
    ctx = AppContext(runs, DEMO, torch.device("cpu"))
    calls = []

    def count(model, dataset, *settings, progress):
        calls.append(settings)
        return SimpleNamespace(to_json=dict)

    monkeypatch.setattr(evidence, "evidence_agreement", count)
    monkeypatch.setattr(evidence, "evidence_agreement_summary", lambda results: "")
    args = ("mnist5k", None, str(runs / "copy"), "B only", "3", 10, 7, 0.5, 0)
    for _ in range(2):
        evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, *args, progress=lambda *a, **k: None)
    assert calls == [(10, 7, 0.5, 0, 3)]  # the second answer came from the cache
    weights = runs / "copy" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "saved again"
    evidence_agreement_view(ctx, MODEL_SETS, ALL_CLASSES, *args, progress=lambda *a, **k: None)
    assert len(calls) == 2
