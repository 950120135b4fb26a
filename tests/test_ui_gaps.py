"""The Confidence gaps tab's handlers, called directly with an AppContext on the demo checkpoints."""

import gradio as gr
import numpy as np
import pytest

from explorer.analysis.pairs import class_test_index, confidence_gaps
from explorer.ui.gaps import TAB_ID as GAPS_TAB
from explorer.ui.gaps import (
    GapsRefresh,
    GapsView,
    change_dataset,
    compute_gaps,
    open_pair,
    refresh_gaps,
    refresh_open_gaps,
)
from explorer.ui.swap import TAB_ID, show_pair
from tests.helpers import CE_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)
SKIP = {"__type__": "update"}  # gr.skip(): the output stays as it is


@pytest.fixture(scope="module")
def computed(ctx):
    return compute_gaps(ctx, "mnist5k", CE, IPS, "A and B", "all classes", 60.0, 7, 0.5, 2.0)


def test_compute_gaps_returns_figures_table_and_the_analysis_numbers(ctx, computed):
    histogram, bars, scatter, table = computed.histogram, computed.class_bars, computed.scatter, computed.table
    summary, payload, settings = computed.summary, computed.data, computed.settings
    mnist = ctx.dataset("mnist5k")
    models = {name: c.model for name, c in ctx.models(mnist, CE, IPS).items()}
    gaps = confidence_gaps(mnist, models, 60, 7, 0.5, seed=2)
    assert payload["pairs"]["anchor"] == gaps.anchors.tolist() and payload["n_pairs"] == 60
    for name in models:
        assert payload["models"][name]["mean_gap"] == pytest.approx(float(gaps.gap(name).mean()), rel=1e-5)
        assert f"mean gap **{payload['models'][name]['mean_gap']:.3f}**" in summary
        shares = [round(100 * payload["models"][name][k]) for k in ("a_teaches", "b_teaches", "ties")]
        assert f"**{name}**: a′ teaches in {shares[0]} % of the pairs, b′ in {shares[1]} %, and {shares[2]} % are " \
               "ties" in summary
    assert "view a teaches" not in summary and payload["models"]["B · ips"]["ties"] > 0.3  # ties: no decision
    assert len(histogram.data) == 2 and len(bars.data) == 2 and len(scatter.data) == 2 * 4  # a′, b′, tie, diagonal
    assert len(table) == 20 and list(table.columns[:3]) == ["class", "test # a", "test # b"]
    assert settings == {"dataset": "mnist5k", "patch_size": 7, "ratio": 0.5, "seed": 2}


def test_compute_gaps_of_one_model_and_class_and_its_refusals(ctx):
    payload = compute_gaps(ctx, "mnist5k", CE, IPS, "B only", "4", 1000, 4, 0.25, 1).data
    assert list(payload["models"]) == ["B · ips"] and set(payload["pairs"]["label"]) == {4}
    assert payload["n_pairs"] == int((ctx.dataset("mnist5k").test_labels == 4).sum())
    with pytest.raises(ValueError, match="models must be one of"):
        compute_gaps(ctx, "mnist5k", CE, IPS, "C only", "all classes", 10, 7, 0.5, 0)
    nothing = compute_gaps(ctx, "mnist5k", None, IPS, "A only", "all classes", 10, 7, 0.5, 0)  # no error badge
    assert nothing.summary == "No model to score the pairs with: choose model A above (checkpoints trained on mnist5k)."
    assert (nothing.histogram, nothing.class_bars, nothing.scatter) == (None, None, None) and nothing.data == {}
    with pytest.raises(ValueError, match="the number of pairs must be at least 1"):
        compute_gaps(ctx, "mnist5k", CE, IPS, "A and B", "all classes", 0, 7, 0.5, 0)
    for seed in (2.5, None, -5):  # a typed 2.5 drew seed 2's pairs and an emptied box seed 0's, the box unchanged
        with pytest.raises(ValueError, match="seed must be a whole number|seed is empty"):
            compute_gaps(ctx, "mnist5k", None, None, "A and B", "all classes", 10, 7, 0.5, seed)  # also without models
    with pytest.raises(ValueError, match="N must be a whole number; got '10.5'"):
        compute_gaps(ctx, "mnist5k", CE, IPS, "A and B", "all classes", 10.5, 7, 0.5, 0)


def test_a_clicked_row_opens_the_same_pair_in_the_patch_swap_tab(ctx, computed):
    table, payload, settings = computed.table, computed.data, computed.settings
    row = table.iloc[0].tolist()
    evt = gr.SelectData(None, {"index": [0, 1], "value": row[1], "row_value": row})
    opened = open_pair(ctx, TAB_ID, settings, evt)
    class_name, slider_a, slider_b = opened.class_name, opened.index_a, opened.index_b
    patch_size, ratio, seed = opened.patch_size, opened.ratio, opened.seed
    mnist = ctx.dataset("mnist5k")
    label = int(class_name)
    assert class_test_index(mnist, label, slider_a.value) == row[1]
    assert class_test_index(mnist, label, slider_b.value) == row[2]
    assert (patch_size, ratio, seed, opened.upload_a, opened.upload_b, opened.tabs.selected) == (7, 0.5, 2, None, None,
                                                                                                "swap")
    swapped = show_pair(ctx, "mnist5k", CE, IPS, class_name, slider_a.value, slider_b.value, None, None, patch_size,
                        ratio, seed).data
    k = payload["pairs"]["anchor"].index(row[1])
    for name in swapped["models"]:  # the pair shows the numbers the table had
        assert swapped["models"][name]["swapped_a"] == pytest.approx(payload["pairs"][name]["confidence_a"][k],
                                                                     abs=1e-4)
    with pytest.raises(ValueError, match="compute the gaps first"):
        open_pair(ctx, TAB_ID, None, evt)


def test_change_dataset_resizes_the_controls(ctx):
    controls = change_dataset(ctx, "digits")
    classes, n_pairs, patch_size = controls.class_filter, controls.n_pairs, controls.patch_size
    digits = ctx.dataset("digits")
    assert [v for _, v in classes.choices] == ["all classes", *digits.class_names] and classes.value == "all classes"
    assert n_pairs.maximum == len(digits.test_labels) == n_pairs.value  # fewer than 500 test images
    assert [v for _, v in patch_size.choices] == [1, 2, 4, 8] and patch_size.value == 2


def test_the_tab_computes_when_opened_and_only_when_its_settings_changed(ctx, computed):
    settings = ["mnist5k", CE, IPS, "A and B", "all classes", 60.0, 7, 0.5, 2.0]
    first = refresh_gaps(ctx, None, *settings)
    assert first.view.data == computed.data and first.shown == settings  # opened cold: the numbers, and their values
    unchanged = GapsRefresh(GapsView(*[SKIP] * len(GapsView._fields)), SKIP)
    assert refresh_gaps(ctx, settings, *settings) == unchanged  # opened again: nothing recomputed
    other = refresh_gaps(ctx, settings, *settings[:-1], 3.0)
    assert other.view.data["seed"] == 3 and other.shown[-1] == 3.0
    assert refresh_open_gaps(ctx, GAPS_TAB, "swap", None, *settings) == unchanged  # the header changed elsewhere
    assert refresh_open_gaps(ctx, GAPS_TAB, GAPS_TAB, None, *settings).view.data == computed.data
    assert np.isclose(change_dataset(ctx, "mnist5k").n_pairs.value, 500)


def test_pairs_that_exchange_no_patch_are_not_called_swapped_views(ctx):
    """Issue 24: 28-pixel patches at ratio 0.5 exchange round(0.5) = 0 of 1 positions: the views are the originals."""
    summary = compute_gaps(ctx, "mnist5k", CE, IPS, "A only", "all classes", 20, 28, 0.5, 0).summary
    assert ("**0 of 1 patch positions exchanged: no position is exchanged, so a′ is a and b′ is b: the views are the "
            "unswapped originals** in every pair.") in summary and "a′ and b′ are the swapped views" not in summary
    mixed = compute_gaps(ctx, "mnist5k", CE, IPS, "A only", "all classes", 20, 7, 0.5, 0).summary
    assert "a′ and b′ are the swapped views of each pair" in mixed and "exchanged:" not in mixed
