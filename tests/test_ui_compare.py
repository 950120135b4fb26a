"""The Compare tab's handlers, called directly with an AppContext on the demo checkpoints."""

import gradio as gr
import pytest
import torch

from explorer.evaluate import classification_metrics, predict_logits
from explorer.ui.compare import GALLERY_SIZE, compare_models, open_sample
from explorer.ui.gradcam import SOURCES, TAB_ID
from tests.helpers import CE_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


def test_compare_models_matches_the_evaluate_module_and_reuses_the_logits(ctx):
    out = compare_models(ctx, "mnist5k", CE, IPS)
    summary, table, _, _, _, fixed, broken, payload, flips = out
    mnist = ctx.dataset("mnist5k")
    right = {}
    for name, checkpoint in ctx.models(mnist, CE, IPS).items():
        logits = predict_logits(checkpoint.model, mnist, mnist.test_images)
        expected = classification_metrics(logits, mnist.test_labels)
        assert {k: payload["models"][name][k] for k in expected} == pytest.approx(expected, abs=1e-5)
        right[name] = logits.argmax(1) == mnist.test_labels
    assert payload["a_wrong_b_right"] == torch.nonzero(~right["A · ce"] & right["B · ips"]).flatten().tolist()
    assert f"B fixes **{len(payload['a_wrong_b_right'])}** of A's mistakes" in summary
    assert table["A · ce"][0] == pytest.approx(100 * payload["models"]["A · ce"]["accuracy"], abs=1e-3)
    assert len(fixed) == min(GALLERY_SIZE, len(payload["a_wrong_b_right"])) and len(broken) == len(flips["broken"])
    assert flips["fixed"] == payload["a_wrong_b_right"][:GALLERY_SIZE]
    truth, a, b = fixed[0][1].split(" · ")
    assert truth == mnist.class_names[int(mnist.test_labels[flips["fixed"][0]])] and a.startswith("A ")
    cached = len(ctx.logits)
    assert cached == 2 and compare_models(ctx, "mnist5k", CE, IPS)[7] == payload and len(ctx.logits) == cached
    with pytest.raises(ValueError, match="choose two checkpoints"):
        compare_models(ctx, "mnist5k", CE, None)


def test_a_clicked_sample_opens_in_the_gradcam_tab():
    shown = {"fixed": [12, 40], "broken": [7]}
    click = gr.SelectData(None, {"index": 1, "value": None})
    assert open_sample("fixed", TAB_ID, shown, click)[:2] == (SOURCES[0], 40)
    assert open_sample("fixed", TAB_ID, shown, click)[2].selected == "gradcam"
    for which, state in (("broken", shown), ("fixed", None)):
        with pytest.raises(ValueError, match="compare the models first, then click a sample"):
            open_sample(which, TAB_ID, state, click)
