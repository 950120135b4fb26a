"""The Patch swap tab's handlers, called directly with an AppContext on the demo checkpoints."""

import json
import shutil
import subprocess

import gradio as gr
import numpy as np
import pytest

from explorer.analysis.pairs import class_test_index, swap_pair
from explorer.ui.components import FILTER_FROM, choice_dropdown
from explorer.ui.swap import change_dataset, pick_class, random_pair, show_pair, show_upload, typed_values_js
from tests.helpers import CE_DEMO, IPS_DEMO, save_digits_run

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


def test_show_pair_draws_the_pair_and_returns_the_core_numbers(ctx):
    out = show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5.0, None, None, 7, 0.5, 4)
    images = (out.original_a, out.original_b, out.swapped_a, out.swapped_b)
    captions = (out.caption_a, out.caption_b, out.caption_swapped_a, out.caption_swapped_b)
    summary, payload, state = out.summary, out.data, out.pair
    assert all(image.shape == (280, 280, 3) and image.dtype == np.uint8 for image in images)
    mnist = ctx.dataset("mnist5k")
    a, b = class_test_index(mnist, 3, 2), class_test_index(mnist, 3, 5)
    models = {name: c.model for name, c in ctx.models(mnist, CE, IPS).items()}
    expected = swap_pair(mnist, mnist.test_images[a], mnist.test_images[b], 3, 7, 0.5, 4, models, anchor=a)
    assert payload["a"] == {"source": "test", "test_index": a, "rank_in_class": 2}
    assert payload["b"] == {"source": "test", "test_index": b, "rank_in_class": 5}
    assert f"a = test image #{a} (sample 2 of the class), b = test image #{b} (sample 5 of the class)" in summary
    assert payload["mask"] == expected.mask.int().tolist() and payload["swapped_patches"] == 8
    for name, score in expected.scores.items():
        assert payload["models"][name]["kd"] == pytest.approx(score.kd) and f"{score.swapped_b:.3f}" in captions[3]
        assert payload["models"][name]["tie"] == score.tie
        assert payload["models"][name]["teacher"] == score.teacher and f"**{score.kd:.4f}**" in summary
    assert "← **teacher**" in captions[2] + captions[3] and "**8 of 16** patch positions" in summary
    assert state["dataset"] == "mnist5k" and state["label"] == 3 and state["patch_size"] == 7
    assert np.array_equal(state["swapped"], expected.swapped.numpy()) and np.array_equal(state["mask"], expected.mask)


def test_show_pair_warns_about_one_image_twice_and_refuses_bad_input(ctx):
    with pytest.warns(UserWarning, match="a and b are the same image"):
        payload = show_pair(ctx, "mnist5k", CE, None, "1", 4, 4, None, None, 14, 0.5, 0).data
    assert payload["grid"] == [2, 2] and list(payload["models"]) == ["A · ce"]
    for args, message in [(("x", 0, 1, 7, 0), "'x' is not a class of mnist5k"),
                          (("1", 2.5, 1, 7, 0), "sample a must be a whole number; got '2.5'"),
                          (("1", 0, 500, 7, 0), "class 1 has 100 test images; index 500 is out of range"),
                          (("1", 0, 1, 5, 0), r"patch size 5 does not divide the 28x28 images"),
                          (("1", 0, 1, 7, None), "seed is empty; type a whole number")]:
        class_name, index_a, index_b, patch_size, seed = args
        with pytest.raises(ValueError, match=message):
            show_pair(ctx, "mnist5k", CE, IPS, class_name, index_a, index_b, None, None, patch_size, 0.5, seed)


def test_pick_class_starts_at_the_first_two_samples_of_the_class(ctx):
    out = pick_class(ctx, "mnist5k", CE, IPS, "8", None, None, 7, 0.5, 0)
    slider_a, slider_b, payload = out.index_a, out.index_b, out.view.data
    assert (slider_a.maximum, slider_a.value, slider_b.value) == (99, 0, 1)
    assert payload["class"] == "8" and payload["a"]["test_index"] == class_test_index(ctx.dataset("mnist5k"), 8, 0)


def test_random_pair_picks_two_samples_of_one_class_and_clears_the_uploads(ctx):
    out = random_pair(ctx, "mnist5k", CE, IPS, 7, 0.5, 3)
    class_name, slider_a, slider_b, payload = out.class_name, out.index_a, out.index_b, out.view.data
    upload_a, upload_b = out.upload_a, out.upload_b
    assert payload["class"] == class_name and upload_a is None and upload_b is None
    assert slider_a.value != slider_b.value and payload["seed"] == 3
    mnist = ctx.dataset("mnist5k")
    assert payload["b"]["test_index"] == class_test_index(mnist, int(class_name), slider_b.value)


def test_a_tie_is_shown_as_a_tie_not_as_a_teacher(ctx):
    """The IPS demo model is exactly as confident (1.0 in float32) in both swapped views of class 0's first pair."""
    out = show_pair(ctx, "mnist5k", CE, IPS, "0", 0, 1, None, None, 7, 0.5, 0)
    captions, summary, payload = (out.caption_a, out.caption_b, out.caption_swapped_a, out.caption_swapped_b), \
        out.summary, out.data
    ips = payload["models"]["B · ips"]
    assert ips["swapped_a"] == ips["swapped_b"] and ips["tie"] and ips["teacher"] == "a"  # training's rule
    assert "**B · ips**: a′ and b′ **tie** (1.000 each)" in summary and "view **a′** teaches b′" in summary
    assert "B · ips: **1.000** = **tie**" in captions[2] and "A · ce: **0.996** ← **teacher**" in captions[2]
    ce = payload["models"]["A · ce"]
    assert not ce["tie"] and f"({ce['swapped_a']:.3f} vs {ce['swapped_b']:.3f})" in summary


def test_a_bad_upload_is_dropped_with_a_warning_and_the_pair_is_still_drawn(ctx, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.warns(UserWarning, match="image a is not used: notes.png is not an image this app can read"):
        out = show_upload(ctx, "a", "mnist5k", CE, IPS, "3", 2, 5, str(bad), None, 7, 0.5, 4)
    upload_a, upload_b, payload = out.upload_a, out.upload_b, out.view.data
    assert upload_a is None and upload_b == {"__type__": "update"}  # the bad file is cleared, the other left alone
    assert payload == show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5, None, None, 7, 0.5, 4).data  # the slider's pair


def test_change_dataset_offers_its_classes_and_the_patch_sizes_training_accepts(ctx):
    out = change_dataset(ctx, "digits", None, None, 0.5, 0)
    classes, slider_a, patch_size, payload = out.class_name, out.index_a, out.patch_size, out.view.data
    upload_a, upload_b = out.upload_a, out.upload_b
    assert [value for _, value in classes.choices] == [str(d) for d in range(10)] and classes.value == "0"
    assert [value for _, value in patch_size.choices] == [1, 2, 4, 8] and patch_size.value == 2
    assert slider_a.maximum == int((ctx.dataset("digits").test_labels == 0).sum()) - 1
    assert upload_a is None and upload_b is None
    assert payload["image_shape"] == [1, 8, 8] and payload["grid"] == [4, 4] and payload["models"] == {}


def test_change_dataset_draws_the_new_datasets_pair_with_its_own_models(ctx):
    digits_run = str(save_digits_run(ctx.runs_dir))
    payload = change_dataset(ctx, "digits", digits_run, None, 0.25, 3).view.data
    assert payload["dataset"] == "digits" and payload["patch_size"] == 2 and list(payload["models"]) == ["A · ce"]
    assert payload["swapped_patches"] == 4  # round(0.25 x 16): the ratio the tab shows is kept


def test_typed_values_are_clamped_in_the_browser_for_every_slider_with_an_id():
    sliders = [gr.Slider(0, 9, elem_id="first"), gr.Slider(0, 1), gr.Number(3), gr.Slider(0, 5, elem_id="third")]
    js = typed_values_js([gr.Textbox(), *sliders])
    assert 'v[1] = clamp("first", v[1]);' in js and 'v[4] = clamp("third", v[4]);' in js
    assert "v[2]" not in js and "v[3]" not in js  # no id, or no slider: left as typed


def test_an_uploads_conversion_is_announced_once_when_it_arrives_not_on_every_redraw(ctx, tmp_path, monkeypatch):
    """Issue 24: one upload announced "resized from 64x64 to 28x28" again on every later redraw."""
    from PIL import Image

    announced = []
    monkeypatch.setattr(gr, "Info", announced.append)
    big = tmp_path / "big.png"
    stroke = np.zeros((64, 64), np.uint8)
    stroke[16:48, 28:36] = 255  # a light stroke on a dark background, as mnist draws them: only resized
    Image.fromarray(stroke).save(big)
    out = show_upload(ctx, "a", "mnist5k", CE, IPS, "3", 2, 5, str(big), None, 7, 0.5, 4)
    assert announced == ["upload a: resized from 64x64 to 28x28"]
    assert "upload a: resized from 64x64 to 28x28" in out.view.data["notes"]  # the JSON keeps saying it
    show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5, str(big), None, 7, 0.6, 4)  # a redraw: a new ratio
    other = tmp_path / "other.png"
    Image.fromarray(stroke.T.copy()).save(other)
    show_upload(ctx, "b", "mnist5k", CE, IPS, "3", 2, 5, str(big), str(other), 7, 0.5, 4)  # then image b arrives
    assert announced == ["upload a: resized from 64x64 to 28x28", "upload b: resized from 64x64 to 28x28"]


def test_a_swap_that_exchanges_nothing_says_the_views_are_the_originals(ctx):
    """Issue 24: 28-pixel patches at ratio 0.5 exchange round(0.5) = 0 of 1 positions, yet the summary said
    "view a′ teaches b′" as if a′ and b′ were swapped views."""
    out = show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5, None, None, 28, 0.5, 4)
    assert out.data["swapped_patches"] == 0
    assert "**0 of 1** patch positions exchanged: **no position is exchanged, so a′ is a and b′ is b" in out.summary
    assert out.summary.count("of these unmixed views, ") == 2
    everything = show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5, None, None, 14, 1.0, 4).summary
    assert "**4 of 4** patch positions exchanged: **every position is exchanged, so a′ is b and b′ is a" in everything
    mixed = show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5, None, None, 7, 0.5, 4).summary
    assert "(outlined)." in mixed and "unmixed" not in mixed


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from explorer.training.runs import RunManager
    from explorer.ui.app import build_app
    from tests.helpers import DEMO

    runs = RunManager(tmp_path_factory.mktemp("runs"))
    yield build_app(runs, checkpoints_dir=DEMO, device="cpu")
    runs.close()


def test_the_sliders_boxes_show_what_was_drawn(demo):
    """Issue 24: the ↺ of a slider reset its box but not the pictures (Gradio's reset sends no input event), and
    a typed 500 drew sample #99 while the box still said 500."""
    sliders = {b.elem_id: b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.elem_id}
    redrawing = ["swap-index-a", "swap-index-b", "swap-ratio", "gaps-n-pairs", "gaps-ratio", "evidence-k",
                 "cam-test-index", "cam-opacity"]
    assert [name for name in redrawing if sliders[name].get_config()["buttons"] != []] == []
    browser_only = {tuple(b.elem_id for b in fn.outputs): fn for fn in demo.fns.values() if fn.fn is None and fn.js}
    for boxes in (("swap-index-a", "swap-index-b", "swap-ratio", "swap-seed"),
                  ("gaps-n-pairs", "gaps-ratio", "gaps-seed")):
        clamp = browser_only[boxes]  # after each draw, the boxes take the values the draw clamped them to
        assert clamp.inputs == clamp.outputs and clamp.js == typed_values_js(clamp.outputs)
    redraw = next(fn for fn in demo.fns.values() if fn.api_name == "patch_evidence_redraw")
    assert isinstance(redraw.inputs[-1], gr.State)  # a new pair or exchange draws the k asked, not the k shown


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the browser-side step")
def test_the_browser_step_puts_typed_slider_values_on_the_slider_and_rounds_whole_number_boxes():
    """typed_values_js run in node on a stand-in page with a 0-99 slider of whole samples and a 0-1 ratio slider
    in steps of 0.05: a typed 150 is sent as 99, an emptied box as the slider's position, 2.5 samples as 3 (it was
    refused), a ratio of 0.33 as 0.35; a seed of 2.5 as 3 (Gradio rounds it on the server anyway; rounded here,
    the box can show it) and an emptied seed box as it is (the app refuses it)."""
    with gr.Blocks():
        boxes = [gr.Slider(0, 99, step=1, elem_id="index"), gr.Slider(0, 99, step=1, elem_id="index"),
                 gr.Slider(0, 99, step=1, elem_id="index"), gr.Slider(0, 1, step=0.05, elem_id="ratio"),
                 gr.Number(precision=0, elem_id="seed"), gr.Number(precision=0, elem_id="seed"),
                 gr.Number(elem_id="plain")]
    stage = ("const sliders = {'#index input[type=range]': {min: '0', max: '99', step: '1', value: '7'}, "
             "'#ratio input[type=range]': {min: '0', max: '1', step: '0.05', value: '0.5'}};"
             "global.document = {querySelector: s => sliders[s] || null};"
             f"console.log(JSON.stringify(({typed_values_js(boxes)})(150, '', 2.5, 0.33, 2.5, '', 0.33)));")
    result = subprocess.run(["node", "-e", stage], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [99, 7, 3, 0.35, 3, "", 0.33]


def test_no_number_box_has_a_limit_that_gradio_would_enforce(demo):
    """Gradio refuses a number below a gr.Number's ``minimum`` (or above its ``maximum``) itself, as an error on
    every output of the event: a typed -1 scene turned the Transfer tab's pictures into red Error badges. The
    handlers check the ranges and refuse in words (a warning, the view kept)."""
    limited = [b.label for b in demo.blocks.values() if isinstance(b, gr.Number)
               and (b.minimum is not None or b.maximum is not None)]
    assert limited == []


def test_short_fixed_lists_are_picked_not_typed(demo, ctx):
    """Issue 24: the Class box kept typed free text ("twelve") while class 3 was drawn, until it lost focus. A
    list of fewer than FILTER_FROM choices takes no typing (mouse and arrow keys pick); a long one (CIFAR-100's
    classes) still filters as one types."""
    fixed = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and not b.allow_custom_value
             and b.label not in ("Teacher (kd)", "Study", "Curves of these runs")]  # lists of runs: they grow
    assert sorted(b.label for b in fixed) == ["Class", "Dataset", "Dataset", "Dataset", "Device", "Method", "Method",
                                             "Pairs of", "Patch size (pixels)", "Patch size (pixels)", "Precision",
                                             "Target class"]
    assert [b.label for b in fixed if b.get_config()["filterable"]] == []
    assert change_dataset(ctx, "digits", None, None, 0.5, 0).class_name.filterable is False  # also after a switch
    assert choice_dropdown([str(c) for c in range(100)]).filterable is True
    assert choice_dropdown([str(c) for c in range(FILTER_FROM - 1)]).filterable is False
