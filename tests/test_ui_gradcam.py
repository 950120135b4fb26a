"""The Grad-CAM tab's handlers, called directly with an AppContext on the demo checkpoints."""

import numpy as np
import pytest

from explorer.analysis.cam import compute_cams
from explorer.ui.gradcam import (
    DEFAULT_LAYER,
    SOURCES,
    CamView,
    change_dataset,
    layer_choices,
    refresh_layers,
    show_cams,
    show_upload,
    source_controls,
)
from explorer.ui.swap import show_pair
from tests.helpers import CE_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


def test_show_cams_of_a_test_image_are_the_packages_cams(ctx):
    out = show_cams(ctx, "mnist5k", CE, IPS, SOURCES[0], 7, None, "GradCAM", DEFAULT_LAYER, "5", 0.5, None)
    picture, cam_a, cam_b, top_a, top_b, info, payload = out
    assert picture.shape == cam_a.shape == cam_b.shape == (280, 280, 3)
    mnist = ctx.dataset("mnist5k")
    truth = mnist.class_names[int(mnist.test_labels[7])]
    assert info.startswith(f"true class: **{truth}**<br>") and payload["true_class"] == truth
    assert payload["test_index"] == 7
    inputs = mnist.normalize(mnist.test_images[7:8])
    for name, top in (("A · ce", top_a), ("B · ips", top_b)):
        model = payload["models"][name]
        assert model["target_class"] == 5 and model["layer"] == "block3"
        assert [[k, v] for k, v in top.items()] == model["top3"]
        cam = compute_cams(ctx.models(mnist, CE, IPS)[name].model, inputs, [5], "block3")[0]
        assert model["cam_max"] == pytest.approx(float(cam.max())) and model["cam_peak"] == list(
            np.unravel_index(int(cam.argmax()), cam.shape))


def test_show_cams_of_a_swapped_view_uses_the_patch_swap_tabs_pair(ctx):
    state = show_pair(ctx, "mnist5k", CE, IPS, "2", 0, 1, None, None, 7, 0.5, 0).pair
    out = show_cams(ctx, "mnist5k", CE, None, SOURCES[2], 0, None, "GradCAM", "block2", "predicted class", 0.3, state)
    payload = out.data
    assert payload["source"] == "swapped" and payload["view"] == "b" and payload["true_class"] == "2"
    assert out.cam_b is None and out.top_b is None and list(payload["models"]) == ["A · ce"]  # no model B
    model = payload["models"]["A · ce"]
    assert model["layer"] == "block2" and model["target_class"] == model["predicted"]
    with pytest.raises(ValueError, match="no swapped pair of digits yet"):
        show_cams(ctx, "digits", None, None, SOURCES[1], 0, None, "GradCAM", DEFAULT_LAYER, "true class", 0.5, state)


@pytest.mark.parametrize("source,index,layer,target,message", [
    (SOURCES[0], 1000, DEFAULT_LAYER, "true class", "test index 1000 is out of range; mnist5k has 1000"),
    (SOURCES[3], 0, DEFAULT_LAYER, "true class", "upload an image first"),
    (SOURCES[0], 0, "head", "true class", "layer 'head' is not a CAM layer"),
    (SOURCES[0], 0, DEFAULT_LAYER, "eleven", "'eleven' is not a class of mnist5k"),
    ("a drawing", 0, DEFAULT_LAYER, "true class", "source must be one of"),
])
def test_show_cams_refuses_bad_input_clearly(ctx, source, index, layer, target, message):
    with pytest.raises(ValueError, match=message):
        show_cams(ctx, "mnist5k", CE, IPS, source, index, None, "GradCAM", layer, target, 0.5, None)


def test_layers_offered_are_those_both_models_have(ctx):
    assert layer_choices(ctx, "mnist5k", CE, IPS) == [DEFAULT_LAYER, "block3", "block2", "block1"]
    assert layer_choices(ctx, "mnist5k", "/etc", IPS) == [DEFAULT_LAYER]  # the tab's own event reports it
    assert refresh_layers(ctx, "mnist5k", CE, IPS, "block2").value == "block2"
    assert refresh_layers(ctx, "mnist5k", None, None, "block2").value == DEFAULT_LAYER


def test_gradcam_hirescam_and_xgradcam_coincide_on_the_default_layer_and_the_tab_says_why(ctx):
    outs = {method: show_cams(ctx, "mnist5k", CE, IPS, SOURCES[0], 7, None, method, DEFAULT_LAYER, "true class", 1.0,
                              None) for method in ("GradCAM", "HiResCAM", "XGradCAM", "GradCAM++")}
    assert np.array_equal(outs["GradCAM"].cam_a, outs["HiResCAM"].cam_a)
    assert np.array_equal(outs["GradCAM"].cam_a, outs["XGradCAM"].cam_a)
    for method in ("GradCAM", "HiResCAM", "XGradCAM"):
        assert "give the same map on this layer" in outs[method].info
    assert "same map" not in outs["GradCAM++"].info
    earlier = show_cams(ctx, "mnist5k", CE, IPS, SOURCES[0], 7, None, "HiResCAM", "block2", "true class", 1.0, None)
    assert "same map" not in earlier.info


def test_no_model_shows_the_image_and_what_to_do_instead_of_an_error(ctx):
    picture, cam_a, cam_b, top_a, top_b, info, payload = show_cams(ctx, "digits", None, None, SOURCES[0], 3, None,
                                                                   "GradCAM", DEFAULT_LAYER, "true class", 0.5, None)
    assert picture.shape[2] == 3 and (cam_a, cam_b, top_a, top_b) == (None, None, None, None)
    assert "no model chosen" in info and payload["models"] == {} and payload["test_index"] == 3


def test_a_test_index_with_a_fraction_is_refused_not_truncated(ctx):
    """A typed 2.5 drew test image #2 while the box said 2.5."""
    with pytest.raises(ValueError, match="test index must be a whole number; got '2.5'"):
        show_cams(ctx, "mnist5k", CE, IPS, SOURCES[0], 2.5, None, "GradCAM", DEFAULT_LAYER, "5", 0.5, None)


def test_the_test_index_slider_is_live_only_for_test_images():
    assert source_controls(SOURCES[0]).interactive is True
    assert all(source_controls(source).interactive is False for source in SOURCES[1:])


def test_a_bad_upload_keeps_the_last_view(ctx, tmp_path):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.warns(UserWarning, match="the upload is not used: empty.png is empty"):
        out = show_upload(ctx, "mnist5k", CE, IPS, SOURCES[0], 7, str(bad), "GradCAM", DEFAULT_LAYER, "true class",
                          0.5, None)
    skip = {"__type__": "update"}
    assert out.source == skip and out.upload is None and out.test_index == skip
    assert list(out.view) == [skip] * len(CamView._fields)


def test_change_dataset_offers_its_test_images_and_classes(ctx):
    source, index, target, layer = change_dataset(ctx, "digits")
    assert source == SOURCES[0] and index.interactive  # a swapped view of the old dataset cannot be shown
    assert layer.value == DEFAULT_LAYER  # a layer typed for the old models would refuse every map of the new
    assert index.maximum == len(ctx.dataset("digits").test_labels) - 1 and index.value == 0
    assert [v for _, v in target.choices][:3] == ["true class", "predicted class", "0"]
