"""The Patch swap tab's handlers, called directly with an AppContext on the demo checkpoints."""

import numpy as np
import pytest

from explorer.analysis.pairs import class_test_index, swap_pair
from explorer.ui.swap import change_dataset, pick_class, random_pair, show_pair
from tests.helpers import CE_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)


def test_show_pair_draws_the_pair_and_returns_the_core_numbers(ctx):
    out = show_pair(ctx, "mnist5k", CE, IPS, "3", 2, 5.0, None, None, 7, 0.5, 4)
    images, captions, summary, payload, state = out[:4], out[4:8], out[8], out[9], out[10]
    assert len(out) == 11 and all(image.shape == (280, 280, 3) and image.dtype == np.uint8 for image in images)
    mnist = ctx.dataset("mnist5k")
    a, b = class_test_index(mnist, 3, 2), class_test_index(mnist, 3, 5)
    models = {name: c.model for name, c in ctx.models(mnist, CE, IPS).items()}
    expected = swap_pair(mnist, mnist.test_images[a], mnist.test_images[b], 3, 7, 0.5, 4, models, anchor=a)
    assert payload["a"] == {"source": "test", "test_index": a} and payload["b"] == {"source": "test", "test_index": b}
    assert payload["mask"] == expected.mask.int().tolist() and payload["swapped_patches"] == 8
    for name, score in expected.scores.items():
        assert payload["models"][name]["kd"] == pytest.approx(score.kd) and f"{score.swapped_b:.3f}" in captions[3]
        assert payload["models"][name]["teacher"] == score.teacher and f"**{score.kd:.4f}**" in summary
    assert "← **teacher**" in captions[2] + captions[3] and "**8 of 16** patch positions" in summary
    assert state["dataset"] == "mnist5k" and state["label"] == 3 and state["patch_size"] == 7
    assert np.array_equal(state["swapped"], expected.swapped.numpy()) and np.array_equal(state["mask"], expected.mask)


def test_show_pair_warns_about_one_image_twice_and_refuses_bad_input(ctx):
    with pytest.warns(UserWarning, match="a and b are the same image"):
        payload = show_pair(ctx, "mnist5k", CE, None, "1", 4, 4, None, None, 14, 0.5, 0)[9]
    assert payload["grid"] == [2, 2] and list(payload["models"]) == ["A · ce"]
    for args, message in [(("x", 0, 1, 7, 0), "'x' is not a class of mnist5k"),
                          (("1", 2.5, 1, 7, 0), "sample a must be a whole number; got 2.5"),
                          (("1", 0, 500, 7, 0), "class 1 has 100 test images; index 500 is out of range"),
                          (("1", 0, 1, 5, 0), r"patch size 5 does not divide the 28x28 images"),
                          (("1", 0, 1, 7, None), "seed must be a whole number")]:
        class_name, index_a, index_b, patch_size, seed = args
        with pytest.raises(ValueError, match=message):
            show_pair(ctx, "mnist5k", CE, IPS, class_name, index_a, index_b, None, None, patch_size, 0.5, seed)


def test_pick_class_starts_at_the_first_two_samples_of_the_class(ctx):
    out = pick_class(ctx, "mnist5k", CE, IPS, "8", None, None, 7, 0.5, 0)
    slider_a, slider_b, payload = out[0], out[1], out[-2]
    assert (slider_a.maximum, slider_a.value, slider_b.value) == (99, 0, 1)
    assert payload["class"] == "8" and payload["a"]["test_index"] == class_test_index(ctx.dataset("mnist5k"), 8, 0)


def test_random_pair_picks_two_samples_of_one_class_and_clears_the_uploads(ctx):
    out = random_pair(ctx, "mnist5k", CE, IPS, 7, 0.5, 3)
    class_name, slider_a, slider_b, upload_a, upload_b, payload = *out[:5], out[-2]
    assert payload["class"] == class_name and upload_a is None and upload_b is None
    assert slider_a.value != slider_b.value and payload["seed"] == 3
    mnist = ctx.dataset("mnist5k")
    assert payload["b"]["test_index"] == class_test_index(mnist, int(class_name), slider_b.value)


def test_change_dataset_offers_its_classes_and_patch_sizes(ctx):
    out = change_dataset(ctx, "digits", None, None, 0.5, 0)
    classes, slider_a, _, patch_size, upload_a, upload_b, payload = *out[:6], out[-2]
    assert [value for _, value in classes.choices] == [str(d) for d in range(10)] and classes.value == "0"
    assert [value for _, value in patch_size.choices] == [2, 4] and patch_size.value == 2
    assert slider_a.maximum == int((ctx.dataset("digits").test_labels == 0).sum()) - 1
    assert upload_a is None and upload_b is None
    assert payload["image_shape"] == [1, 8, 8] and payload["grid"] == [4, 4] and payload["models"] == {}
