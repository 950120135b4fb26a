"""The Grad-CAM tab's faithfulness section, called directly with an AppContext on the demo checkpoints."""

import numpy as np
import pytest
import torch

from explorer.analysis.faithfulness import ForeignCamMass, compare_faithfulness, foreign_cam_mass
from explorer.stats import mean_interval
from explorer.ui.faithfulness import _foreign_sentence, cam_faithfulness_view
from explorer.ui.gradcam import DEFAULT_LAYER
from tests.helpers import CE_DEMO, IPS_DEMO

# raised inside pytorch_grad_cam's RemoveMostRelevantFirst (np.float32 of a torch tensor), not by our code
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")
CE, IPS = str(CE_DEMO), str(IPS_DEMO)


class Recorder:
    """Stands in for gr.Progress: keeps every fraction reported."""

    def __init__(self):
        self.fractions = []

    def __call__(self, fraction, desc=None):
        self.fractions.append(fraction)


@pytest.fixture(scope="module")
def measured(ctx):
    progress = Recorder()
    out = cam_faithfulness_view(ctx, DEFAULT_LAYER, "mnist5k", CE, IPS, "GradCAM", "block2", 12, 3, progress=progress)
    return out, progress


def test_faithfulness_of_both_models_is_the_analysis_on_the_same_images(ctx, measured):
    view, progress = measured
    text, table, figure, payload = view.summary, view.table, view.figure, view.data
    mnist = ctx.dataset("mnist5k")
    models = {name: c.model for name, c in ctx.models(mnist, CE, IPS).items()}
    expected = compare_faithfulness(models, mnist, 12, "GradCAM", "block2", seed=3)
    foreign = {}
    for name, result in (("A · ce", expected.a), ("B · ips", expected.b)):
        got = payload["models"][name]
        assert got["layer"] == "block2" and got["test_indices"] == result.indices.tolist()
        assert got["metrics"]["ROAD combined"]["per_image"] == pytest.approx(result.road_combined.tolist())
        foreign[name] = foreign_cam_mass(models[name], mnist, 12, 7, 0.5, 3, "GradCAM", "block2")
        assert got["foreign_cam_mass"]["summary"]["mean"] == pytest.approx(foreign[name].summary().mean)
    share_difference = foreign["B · ips"].pair_share - foreign["A · ce"].pair_share
    assert payload["difference_b_minus_a"]["CAM share on swapped-in patches"]["mean"] == pytest.approx(
        float(np.nanmean(share_difference)))
    last = table.iloc[-1]
    assert last["B − A"].startswith(f"{np.nanmean(share_difference):+.4f}".replace("-", "−"))
    assert last["A · ce"].startswith(f"{foreign['A · ce'].summary().mean:+.4f}".replace("-", "−"))
    assert expected.sentence() in text and payload["sentence"] == expected.sentence()
    assert (payload["n_images"], payload["patch_size"], payload["swap_ratio"]) == (12, 7, 0.5)
    combined = table[table.metric == "ROAD combined"].iloc[0]
    difference = mean_interval(expected.b.road_combined - expected.a.road_combined)
    assert combined["more faithful"] == "higher"
    assert combined["B − A"].startswith(f"{difference.mean:+.4f}".replace("-", "−"))
    assert table.metric.tolist()[:2] == ["ROAD MoRF, 80 % imputed", "ROAD LeRF, 80 % imputed"]
    assert table.metric.tolist()[-1] == "CAM share on swapped-in patches" and "on this share" in text
    morf_a = figure.data[0]
    assert list(morf_a.x) == [80, 60, 40, 20] and morf_a.y == pytest.approx(expected.a.morf.mean(1).tolist())
    assert progress.fractions == sorted(progress.fractions) and 0.85 in progress.fractions
    assert len(progress.fractions) >= 3  # a batch of each model, then the CAM mass


def test_a_second_request_is_answered_from_the_cache(ctx, measured):
    view, _ = measured
    progress = Recorder()
    again = cam_faithfulness_view(ctx, DEFAULT_LAYER, "mnist5k", CE, IPS, "GradCAM", "block2", 12, 3,
                                  progress=progress)
    assert again.summary == view.summary and again.data == view.data and progress.fractions == []  # not recomputed


def test_the_default_layer_is_each_models_own(ctx):
    out = cam_faithfulness_view(ctx, DEFAULT_LAYER, "mnist5k", CE, IPS, "GradCAM", DEFAULT_LAYER, 10, 0,
                                progress=Recorder())
    assert {m["layer"] for m in out.data["models"].values()} == {"block3"}
    assert np.isfinite(out.data["difference_b_minus_a"]["ROAD combined"]["mean"])


@pytest.mark.parametrize("change,message", [
    ({"model_b": None}, "choose two checkpoints"),
    ({"method": "NoCAM"}, "unknown CAM method 'NoCAM'"),
    ({"n_images": 1}, "between 2 and the 1000 test images of mnist5k"),
    ({"n_images": 1001}, "between 2 and the 1000 test images"),
    ({"layer": "head"}, "not a CAM layer"),
])
def test_bad_requests_get_a_clear_message(ctx, change, message):
    args = dict(dataset_name="mnist5k", model_a=CE, model_b=IPS, method="GradCAM", layer="block2", n_images=10,
                seed=0)
    with pytest.raises(ValueError, match=message):
        cam_faithfulness_view(ctx, DEFAULT_LAYER, **{**args, **change}, progress=Recorder())


def test_the_share_sentence_says_how_many_pairs_were_left_out():
    """Issue 24: N = 20 reported "11 pairs" without saying that 9 were dropped (a map that is all zero)."""
    def mass(share_a, share_b):
        n = len(share_a)
        return ForeignCamMass("GradCAM", "block2", torch.arange(n), torch.arange(n), torch.zeros(n, dtype=torch.long),
                              np.array(share_a), np.array(share_b), 0.5)

    nan = float("nan")
    foreign = {"A · ce": mass([0.4, nan, 0.5, 0.6, 0.5], [0.5, 0.5, 0.4, 0.5, 0.6]),
               "B · ips": mass([0.3, 0.4, 0.4, nan, 0.4], [0.3, 0.4, nan, 0.4, 0.3])}
    text = _foreign_sentence(foreign, ("A · ce", "B · ips"))
    assert "(95 % CI" in text and "2 pairs)" in text  # pairs 0 and 4: the only ones both models' maps share
    assert text.endswith("3 of the 5 pairs are left out: a map of one of their views is all zero, so it has no mass "
                         "to share (A · ce: 1, B · ips: 2).")
    whole = {name: mass([0.4, 0.5, 0.6], [0.5, 0.4, 0.5]) for name in foreign}
    assert "left out" not in _foreign_sentence(whole, ("A · ce", "B · ips"))
