"""The Compare tab's handlers, called directly with an AppContext on the demo checkpoints."""

import gradio as gr
import pytest
import torch

from explorer.evaluate import classification_metrics, predict_logits
from explorer.ui.binding import flatten
from explorer.ui.compare import GALLERY_SIZE, compare_models, open_sample, refresh_compare, refresh_open_compare
from explorer.ui.compare import TAB_ID as COMPARE_TAB
from explorer.ui.gradcam import SOURCES, TAB_ID
from tests.helpers import CE_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


def test_compare_models_matches_the_evaluate_module_and_reuses_the_logits(ctx):
    out = compare_models(ctx, "mnist5k", CE, IPS)
    summary, table, fixed, broken, payload, flips = out.summary, out.metrics, out.fixed, out.broken, out.data, out.flips
    mnist = ctx.dataset("mnist5k")
    right = {}
    for name, checkpoint in ctx.models(mnist, CE, IPS).items():
        logits = predict_logits(checkpoint.model, mnist, mnist.test_images)
        expected = classification_metrics(logits, mnist.test_labels)
        assert {k: payload["models"][name][k] for k in expected} == pytest.approx(expected, abs=1e-5)
        right[name] = logits.argmax(1) == mnist.test_labels
    assert payload["a_wrong_b_right"] == torch.nonzero(~right["A · ce"] & right["B · ips"]).flatten().tolist()
    n_fixed, n_broken = len(payload["a_wrong_b_right"]), len(payload["a_right_b_wrong"])
    assert f"({n_fixed} of A's errors fixed, {n_broken} of its correct answers broken)" in summary
    assert [f"- {claim['text']}" for claim in payload["claims"]] == summary.splitlines()[1:]  # the claims, shown
    assert table["A · ce"][0] == pytest.approx(100 * payload["models"]["A · ce"]["accuracy"], abs=1e-3)
    assert len(fixed) == min(GALLERY_SIZE, len(payload["a_wrong_b_right"])) and len(broken) == len(flips["broken"])
    assert flips["fixed"] == payload["a_wrong_b_right"][:GALLERY_SIZE]
    truth, a, b = fixed[0][1].split(" · ")
    assert truth == mnist.class_names[int(mnist.test_labels[flips["fixed"][0]])] and a.startswith("A ")
    cached = len(ctx.logits)
    assert cached == 2 and compare_models(ctx, "mnist5k", CE, IPS).data == payload and len(ctx.logits) == cached
    one = compare_models(ctx, "mnist5k", CE, None)  # no error badge: what to do
    assert one.summary == "Choose two checkpoints trained on mnist5k, model A and model B, to compare them."
    assert (one.reliability, one.confidence, one.confusion) == (None, None, None) and one.data == {}


def test_the_claims_match_the_metrics_table(ctx):
    """The issue's case: the old Guide said "less over-confident" while the table said otherwise."""
    view = compare_models(ctx, "mnist5k", CE, IPS)
    summary, table = view.summary, view.metrics
    rows = {metric: (a, b) for metric, a, b in zip(table["metric"], table["A · ce"], table["B · ips"], strict=True)}
    confidence, nll = rows["mean true-class confidence"], rows["NLL"]
    assert f"mean true-class probability {confidence[1]:.3f} vs {confidence[0]:.3f}" in summary
    assert "No NLL difference shown between **B · ips** and **A · ce**" in summary  # one pair: its interval holds 0
    assert f"{nll[1]:.3f} vs {nll[0]:.3f}" in summary and "NLL is higher" not in summary
    assert "less over-confident" not in summary and "leans further towards over-confidence" in summary


def test_one_pair_of_models_is_not_stated_as_a_fact_about_the_methods(ctx):
    """The issue's case: "B·ips is better calibrated: ECE 0.93 % vs 1.02 %" from one pair, with no interval."""
    summary = compare_models(ctx, "mnist5k", CE, IPS).summary
    assert "No ECE difference shown between **B · ips** and **A · ce**: ECE 0.93 % vs 1.02 %" in summary
    assert "which includes 0" in summary and "better calibrated" not in summary
    assert "one seed of each method" in summary and "the Study tab" in summary


def test_the_tab_compares_when_opened_and_only_when_the_models_changed(ctx):
    first = refresh_compare(ctx, None, "mnist5k", CE, IPS)
    assert first.shown == ["mnist5k", CE, IPS] and "test images" in first.view.summary
    skip = {"__type__": "update"}
    assert flatten(refresh_compare(ctx, ["mnist5k", CE, IPS], "mnist5k", CE, IPS)) == [skip] * 10
    assert flatten(refresh_open_compare(ctx, COMPARE_TAB, "swap", None, "mnist5k", CE, IPS)) == [skip] * 10
    assert refresh_open_compare(ctx, COMPARE_TAB, COMPARE_TAB, None, "mnist5k", CE, IPS).view.data == first.view.data


def test_a_clicked_sample_opens_in_the_gradcam_tab():
    shown = {"fixed": [12, 40], "broken": [7]}
    click = gr.SelectData(None, {"index": 1, "value": None})
    opened = open_sample("fixed", TAB_ID, shown, click)
    assert (opened.source, opened.test_index.value, opened.test_index.interactive, opened.tabs.selected) == (
        SOURCES[0], 40, True, "gradcam")
    for which, state in (("broken", shown), ("fixed", None)):
        with pytest.raises(ValueError, match="compare the models first, then click a sample"):
            open_sample(which, TAB_ID, state, click)
