"""The app's plain functions: pair rendering, pairs and gaps, comparison metrics, CAMs, the checkpoint catalog."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.cam import CAM_METHODS, compute_cams, explain
from explorer.analysis.catalog import (
    checkpoint_folder,
    checkpoint_name,
    checkpoint_roots,
    default_pair,
    list_checkpoints,
    public_text,
)
from explorer.analysis.comparison import compare_reports, model_report, split_logits
from explorer.analysis.pairs import anchor_masks, confidence_gaps, gap_statistics, swap_pair
from explorer.analysis.render import GRID_COLOUR, OUTLINE_COLOUR, display_scale, render_image
from explorer.checkpoints import CheckpointError, load_checkpoint
from explorer.evaluate import calibration_bins, predict_logits
from explorer.ips import dividing_patch_sizes, ips_loss, random_patch_mask
from tests.helpers import CE_DEMO, DEMO, IPS_DEMO, ROOT

CE, IPS = CE_DEMO, IPS_DEMO


@pytest.fixture(scope="module")
def models(demo_models):
    return demo_models


# ------------------------------------------------------------------ rendering
def test_render_upscales_by_pixel_repetition_without_blur():
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4) * 16
    out = render_image(image, scale=5)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    for r in range(4):
        for c in range(4):
            block = out[5 * r:5 * r + 5, 5 * c:5 * c + 5]
            assert (block == int(image[0, r, c])).all()  # every source pixel is a flat 5x5 block


def test_render_draws_grid_on_patch_borders_and_outlines_only_swapped_patches():
    image = torch.full((3, 8, 8), 40, dtype=torch.uint8)
    mask = torch.tensor([[True, False], [False, False]])  # 4-pixel patches: only the top-left one swapped
    out = render_image(image, patch_size=4, mask=mask, scale=10)
    assert out.shape == (80, 80, 3)
    step, thickness = 40, max(2, 40 // 12)
    assert (out[step, step + 10:] == GRID_COLOUR).all() and (out[step + 10:, step] == GRID_COLOUR).all()
    top_left = out[:step, :step]
    assert (top_left[:thickness] == OUTLINE_COLOUR).all() and (top_left[:, :thickness] == OUTLINE_COLOUR).all()
    assert (top_left[thickness:-thickness, thickness:-thickness] == 40).all()  # inside the frame: the image
    others = [out[:step, step + 1:], out[step + 1:, :step], out[step + 1:, step + 1:]]
    for patch in others:  # unswapped patches: no outline colour anywhere, only image and grid
        assert not (patch == OUTLINE_COLOUR).all(axis=-1).any()
        assert (patch == 40).all(axis=-1).mean() > 0.9


def test_render_refuses_a_patch_size_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        render_image(torch.zeros(1, 28, 28, dtype=torch.uint8), patch_size=5)


def test_display_scale_and_patch_sizes():
    assert display_scale(28, 28) * 28 >= 280 and display_scale(8, 8) * 8 >= 280 and display_scale(32, 32) == 9
    assert dividing_patch_sizes(28, 28) == [1, 2, 4, 7, 14, 28]  # what the training CLI accepts
    assert dividing_patch_sizes(8, 8) == [1, 2, 4, 8]
    assert dividing_patch_sizes(32, 32) == [1, 2, 4, 8, 16, 32]


# ------------------------------------------------------------------ pairs
def test_anchor_masks_are_the_cores_masks_one_row_per_test_image(mnist):
    masks = anchor_masks(mnist, 7, 0.5, seed=3)
    assert masks.shape == (1000, 4, 4) and masks.flatten(1).sum(1).eq(8).all()
    assert torch.equal(masks, random_patch_mask(1000, (4, 4), 0.5, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(masks, anchor_masks(mnist, 7, 0.5, seed=4))
    with pytest.raises(ValueError, match=r"5 does not divide the 28x28 images; use one of \[1, 2, 4, 7, 14, 28\]"):
        anchor_masks(mnist, 5, 0.5, seed=3)  # the sizes ips.check_patch_size allows
    assert anchor_masks(mnist, 28, 1.0, seed=3).shape == (1000, 1, 1)  # accepted, though the tab does not offer it


def test_a_gap_pair_opened_alone_shows_the_same_swap_and_numbers(mnist, models):
    gaps = confidence_gaps(mnist, models, 50, 7, 0.5, seed=3)
    masks = anchor_masks(mnist, 7, 0.5, seed=3)
    for k in (0, 17, 49):
        anchor, partner, label = int(gaps.anchors[k]), int(gaps.partners[k]), int(gaps.labels[k])
        pair = swap_pair(mnist, mnist.test_images[anchor], mnist.test_images[partner], label, 7, 0.5, 3, models,
                         anchor=anchor)
        assert torch.equal(pair.mask, masks[anchor])
        for name in models:
            s = pair.scores[name]
            assert s.swapped_a == pytest.approx(float(gaps.confidence_a[name][k]), abs=1e-5)
            assert s.swapped_b == pytest.approx(float(gaps.confidence_b[name][k]), abs=1e-5)
            assert s.kd == pytest.approx(float(gaps.kd[name][k]), rel=1e-4, abs=1e-7)
            assert (s.teacher == "a") == bool(gaps.teacher_is_a[name][k])
    # the positions belong to the anchor: another partner, the same exchanged positions
    other = swap_pair(mnist, mnist.test_images[anchor], mnist.test_images[anchor], label, 7, 0.5, 3, models,
                      anchor=anchor)
    assert torch.equal(other.mask, masks[anchor])


def test_swap_pair_numbers_are_the_core_loss_on_the_swapped_views(mnist, models):
    labels = mnist.test_labels
    i, j = torch.nonzero(labels == 3).flatten()[:2].tolist()
    pair = swap_pair(mnist, mnist.test_images[i], mnist.test_images[j], 3, 7, 0.5, 11, models)
    assert pair.mask.shape == (4, 4) and int(pair.mask.sum()) == 8
    # the swap conserves the pair's pixels
    assert torch.equal(pair.swapped.sum(0, dtype=torch.long), pair.originals.sum(0, dtype=torch.long))
    for name, model in models.items():
        logits = predict_logits(model, mnist, torch.cat([pair.originals, pair.swapped]))
        probs = F.softmax(logits, 1)[:, 3]
        expected = ips_loss(logits[2:3], logits[3:4], torch.tensor([3]))
        s = pair.scores[name]
        assert [s.original_a, s.original_b, s.swapped_a, s.swapped_b] == pytest.approx(probs.tolist(), abs=1e-6)
        assert s.kd == pytest.approx(float(expected.kd_per_pair[0]), rel=1e-5)
        assert s.teacher == ("a" if s.swapped_a >= s.swapped_b else "b")


def test_gap_pairs_are_fixed_by_the_seed_whatever_n_or_class_filter(mnist, models):
    one = {"B": models["B"]}
    small = confidence_gaps(mnist, one, 40, 7, 0.5, seed=5)
    large = confidence_gaps(mnist, one, 200, 7, 0.5, seed=5)
    assert torch.equal(small.anchors, large.anchors[:40]) and torch.equal(small.partners, large.partners[:40])
    assert torch.allclose(small.confidence_a["B"], large.confidence_a["B"][:40], atol=1e-5)
    sevens = confidence_gaps(mnist, one, 1000, 7, 0.5, seed=5, label=7)
    assert len(sevens.anchors) == int((mnist.test_labels == 7).sum())  # N capped by the class size
    in_large = {a: p for a, p in zip(large.anchors.tolist(), large.partners.tolist(), strict=True)}
    shared = [a for a in sevens.anchors.tolist() if a in in_large]
    assert shared and all(in_large[a] == p for a, p in zip(sevens.anchors.tolist(), sevens.partners.tolist(),
                                                           strict=True) if a in in_large)
    labels = mnist.test_labels
    assert torch.equal(labels[large.anchors], labels[large.partners]) and (large.anchors != large.partners).all()
    assert len(set(large.anchors.tolist())) == 200
    other_seed = confidence_gaps(mnist, one, 40, 7, 0.5, seed=6)
    assert not torch.equal(other_seed.anchors, small.anchors)


def test_gap_statistics_against_a_hand_computation():
    gaps = torch.tensor([0.1, 0.3, 0.5, 0.2, 0.9])
    labels = torch.tensor([0, 0, 2, 2, 2])
    teacher_is_a = torch.tensor([True, False, True, True, False])
    stats = gap_statistics(gaps, labels, teacher_is_a, num_classes=4)
    assert stats.mean == pytest.approx(2.0 / 5)
    assert stats.median == pytest.approx(0.3)
    assert (stats.a_teaches, stats.b_teaches, stats.ties) == pytest.approx((0.6, 0.4, 0.0))
    assert stats.class_mean[0] == pytest.approx(0.2) and stats.class_mean[2] == pytest.approx(1.6 / 3)
    assert stats.class_mean[1] is None and stats.class_mean[3] is None
    assert stats.class_count == [2, 0, 3, 0]
    even = gap_statistics(torch.tensor([0.1, 0.2, 0.3, 0.6]), torch.zeros(4, dtype=torch.long),
                          torch.ones(4, dtype=torch.bool), 1)
    assert even.median == pytest.approx(0.25)  # the usual median of an even count, not the lower middle


def test_a_tie_is_counted_apart_from_the_teacher_the_rule_picks():
    gaps = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.1])  # three pairs with exactly equal confidences
    teacher_is_a = torch.tensor([True, True, True, True, False])  # ips_loss makes a′ the teacher of a tie
    stats = gap_statistics(gaps, torch.zeros(5, dtype=torch.long), teacher_is_a, 1)
    assert (stats.a_teaches, stats.b_teaches, stats.ties) == pytest.approx((0.2, 0.2, 0.6))


def test_the_ips_demo_model_ties_most_swapped_pairs(mnist, models):
    """The ties the issue found behind "view a teaches in 79 % of pairs": most are no decision of the model."""
    gaps = confidence_gaps(mnist, models, 200, 7, 0.5, seed=0)
    stats = {name: gap_statistics(gaps.gap(name), gaps.labels, gaps.teacher_is_a[name], 10) for name in models}
    for s in stats.values():
        assert s.a_teaches + s.b_teaches + s.ties == pytest.approx(1.0)
    assert stats["B"].ties > 0.3 and stats["A"].ties < 0.05
    assert float(gaps.teacher_is_a["B"].double().mean()) == pytest.approx(stats["B"].a_teaches + stats["B"].ties)


def test_gap_of_a_pair_is_the_distance_of_its_view_confidences(mnist, models):
    gaps = confidence_gaps(mnist, models, 30, 4, 0.75, seed=0)
    for name in models:
        assert torch.allclose(gaps.gap(name), (gaps.confidence_a[name] - gaps.confidence_b[name]).abs())
        assert torch.equal(gaps.teacher_is_a[name], gaps.confidence_a[name] >= gaps.confidence_b[name])
        assert (gaps.kd[name] >= 0).all()


# ------------------------------------------------------------------ comparison
def _logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probabilities).log()


def test_reliability_bins_and_ece_against_a_hand_computation():
    probabilities = [[0.9, 0.05, 0.05], [0.1, 0.7, 0.2], [0.15, 0.3, 0.55], [0.45, 0.35, 0.2], [0.02, 0.95, 0.03]]
    labels = torch.tensor([0, 0, 2, 1, 1])  # max confidences .9 .7 .55 .45 .95; correct: yes no yes no yes
    report = model_report(_logits_for(probabilities), labels, 3)
    five = calibration_bins(report.confidence, report.correct, n_bins=5)
    # (0.4, 0.6]: .55 right, .45 wrong; (0.6, 0.8]: .7 wrong; (0.8, 1]: .9 and .95 right
    assert five.count == [0, 0, 2, 1, 2]
    assert five.accuracy[2:] == pytest.approx([0.5, 0.0, 1.0])
    assert five.confidence[2:] == pytest.approx([0.5, 0.7, 0.925])
    assert five.ece == pytest.approx(2 / 5 * 0.0 + 1 / 5 * 0.7 + 2 / 5 * 0.075)
    assert sum(report.bins.count) == 5 and len(report.bins.count) == 15
    assert report.metrics["ece"] == pytest.approx(report.bins.ece)
    assert report.metrics["accuracy"] == pytest.approx(0.6)
    brier = [0.1**2 + 2 * 0.05**2, 0.9**2 + 0.7**2 + 0.2**2, 0.15**2 + 0.3**2 + 0.45**2,
             0.45**2 + 0.65**2 + 0.2**2, 0.02**2 + 0.05**2 + 0.03**2]
    assert report.metrics["brier"] == pytest.approx(sum(brier) / 5, rel=1e-5)
    assert report.metrics["true_class_confidence"] == pytest.approx((0.9 + 0.1 + 0.55 + 0.35 + 0.95) / 5, rel=1e-5)


def test_confusion_difference_and_flips_by_hand():
    labels = torch.tensor([0, 1, 2, 2, 1])
    onehot = lambda pred: F.one_hot(torch.tensor(pred), 3).float() * 5  # noqa: E731
    a = model_report(onehot([0, 2, 2, 1, 1]), labels, 3)  # wrong on samples 1 and 3
    b = model_report(onehot([0, 1, 0, 2, 1]), labels, 3)  # wrong on sample 2
    result = compare_reports(a, b)
    assert result.fixed.tolist() == [1, 3] and result.broken.tolist() == [2]
    expected_a = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    expected_b = torch.tensor([[1, 0, 0], [0, 2, 0], [1, 0, 1]])
    assert torch.equal(a.confusion, expected_a) and torch.equal(b.confusion, expected_b)
    assert torch.equal(result.confusion_difference, expected_b - expected_a)
    assert int(result.confusion_difference.sum()) == 0


# ------------------------------------------------------------------ Grad-CAM
@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cams_of_both_models_have_the_image_shape_and_values_in_0_1(mnist, models, method):
    inputs = mnist.normalize(mnist.test_images[:3])
    targets = mnist.test_labels[:3].tolist()
    for model in models.values():
        cams = compute_cams(model, inputs, targets, method=method)
        assert cams.shape == (3, 28, 28) and cams.dtype == np.float32
        assert cams.min() >= 0.0 and cams.max() <= 1.0 and cams.max() > 0.5  # normalised, not all zero
        assert not model.block3._forward_hooks and not model.block3._backward_hooks  # hooks released
        assert all(p.grad is None for p in model.parameters())


def test_explain_is_the_prediction_and_the_cam_of_the_target(mnist, models):
    model, inputs = models["B"], mnist.normalize(mnist.test_images[5:6])
    probabilities = F.softmax(predict_logits(model, mnist, mnist.test_images[5:6]), 1)[0]
    result = explain(model, inputs, None)
    assert torch.allclose(result.probabilities, probabilities, atol=1e-6)
    assert result.predicted == result.target_class == int(probabilities.argmax()) and result.layer == "block3"
    assert np.allclose(result.cam, compute_cams(model, inputs, [result.predicted], "block3")[0])
    other = explain(model, inputs, 2, layer="block1", method="GradCAM++")
    assert (other.target_class, other.layer) == (2, "block1")
    assert np.allclose(other.cam, compute_cams(model, inputs, [2], "block1", "GradCAM++")[0])


def test_cam_layers_differ_and_bad_arguments_are_refused(mnist, models):
    inputs = mnist.normalize(mnist.test_images[:1])
    deep = compute_cams(models["B"], inputs, [int(mnist.test_labels[0])], layer="block3")
    shallow = compute_cams(models["B"], inputs, [int(mnist.test_labels[0])], layer="block1")
    assert deep.shape == shallow.shape and not np.allclose(deep, shallow)
    with pytest.raises(ValueError, match="not a CAM layer"):
        compute_cams(models["B"], inputs, [0], layer="head")
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(models["B"], inputs, [0], method="MagicCAM")
    with pytest.raises(ValueError, match="one target class per sample"):
        compute_cams(models["B"], inputs, [0, 1])
    assert not models["B"].block1._forward_hooks  # released after the failure too


def test_score_cam_draws_no_progress_bar_into_the_log(mnist, models, capfd):
    inputs = mnist.normalize(mnist.test_images[:1])
    cams = compute_cams(models["A"], inputs, [int(mnist.test_labels[0])], method="ScoreCAM")
    assert cams.shape == (1, 28, 28) and cams.max() > 0.5
    captured = capfd.readouterr()
    assert "it/s" not in captured.err + captured.out and "%|" not in captured.err + captured.out


# ------------------------------------------------------------------ catalog
def test_catalog_lists_demo_checkpoints_and_new_runs_at_once(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    listed = list_checkpoints([DEMO, runs])
    names = [name for _, name in listed]
    assert "checkpoints/mnist5k-small_cnn-ce" in names and "checkpoints/mnist5k-small_cnn-ips" in names
    assert any("ips, small_cnn on mnist5k" in label for label, _ in listed)
    assert all(label.startswith(f"{name} (") for label, name in listed)  # the value is the label's prefix
    assert default_pair([DEMO, runs]) == ("checkpoints/mnist5k-small_cnn-ce", "checkpoints/mnist5k-small_cnn-ips")
    (runs / "still-empty").mkdir()  # a run that has not saved a checkpoint yet is not offered
    shutil.copytree(IPS, runs / "new-run")
    assert [n for _, n in list_checkpoints([DEMO, runs]) if n.startswith("runs/")] == ["runs/new-run"]


def test_public_names_resolve_to_their_folders_and_back(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(IPS, runs / "new-run")
    dirs = [DEMO, runs]
    for _, name in list_checkpoints(dirs):
        folder = checkpoint_folder(name, dirs)
        assert folder.is_absolute() and folder.parent in (DEMO.resolve(), runs.resolve())
        assert checkpoint_name(folder) == name and checkpoint_folder(str(folder), dirs) == folder  # a path works too
    assert checkpoint_folder("runs/new-run", dirs) == (runs / "new-run").resolve()
    assert checkpoint_folder("checkpoints/mnist5k-small_cnn-ce", dirs) == CE.resolve()
    monkeypatch.chdir(tmp_path)  # a relative root is named by its real folder name
    assert [name for _, name in list_checkpoints(["./runs/"])] == ["runs/new-run"]
    assert checkpoint_folder("runs/new-run", ["./runs/"]) == (runs / "new-run").resolve()
    assert checkpoint_roots([".", "runs", "./runs"]) == {tmp_path.resolve().name: tmp_path.resolve(),
                                                         "runs": runs.resolve()}  # the same folder counts once


def test_checkpoint_folder_refuses_paths_outside_the_offered_dirs(tmp_path):
    assert checkpoint_folder(str(CE), [DEMO]) == CE.resolve()
    for bad in ("/etc", str(DEMO), str(CE / "model.safetensors"), str(CE / ".." / ".." / "tests"), ""):
        with pytest.raises(CheckpointError):
            checkpoint_folder(bad, [DEMO])


@pytest.mark.parametrize("name", ["checkpoints/..", "checkpoints/../checkpoints", "checkpoints/../tests",
                                  "checkpoints/mnist5k-small_cnn-ce/..", "checkpoints/mnist5k-small_cnn-ce/x",
                                  "checkpoints/", "checkpoints", "checkpoints/no-such-model",
                                  "runs/mnist5k-small_cnn-ce", "elsewhere/mnist5k-small_cnn-ce",
                                  "/checkpoints/mnist5k-small_cnn-ce"])
def test_checkpoint_folder_refuses_names_it_did_not_offer(name, tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(CheckpointError, match="is not one of the checkpoints offered here") as refusal:
        checkpoint_folder(name, [DEMO, tmp_path / "runs"])
    assert str(tmp_path) not in str(refusal.value) and str(ROOT) not in str(refusal.value)  # roots by name only
    assert "checkpoints/ or runs/" in str(refusal.value)


def test_two_checkpoint_folders_with_one_name_are_refused(tmp_path):
    (tmp_path / "a" / "models").mkdir(parents=True)
    (tmp_path / "b" / "models").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="two checkpoint folders share the name 'models'"):
        checkpoint_roots([tmp_path / "a" / "models", tmp_path / "b" / "models"])
    with pytest.raises(CheckpointError, match="two checkpoint folders share the name 'models'"):
        list_checkpoints([tmp_path / "a" / "models", tmp_path / "b" / "models"])
    with pytest.raises(CheckpointError, match="two checkpoint folders share the name 'models'"):
        checkpoint_folder("models/x", [tmp_path / "a" / "models", tmp_path / "b" / "models"])


def test_public_text_names_the_folders_instead_of_their_paths(tmp_path):
    runs = tmp_path / "runs"
    text = f"checkpoint: {runs.resolve()}/r1  |  evaluate it: python -m explorer.evaluate {runs.resolve()}/r1"
    assert public_text(text, [DEMO, runs]) == "checkpoint: runs/r1  |  evaluate it: python -m explorer.evaluate runs/r1"


def test_symlinked_checkpoint_folders_are_neither_listed_nor_loaded(tmp_path):
    """One policy with the run manager: links are not followed (not listed, so not refused after being offered)."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    shutil.copytree(IPS, checkpoints / "real")
    (checkpoints / "outside").symlink_to(CE, target_is_directory=True)  # a link out of the folder
    (checkpoints / "inside").symlink_to(checkpoints / "real", target_is_directory=True)  # and one within it
    assert [name for _, name in list_checkpoints([checkpoints])] == ["checkpoints/real"]
    assert default_pair([checkpoints]) == (None, "checkpoints/real")  # the linked CE is not a model A
    assert checkpoint_folder(str(checkpoints / "real"), [checkpoints]) == (checkpoints / "real").resolve()
    for link in ("outside", "inside"):
        for value in (str(checkpoints / link), f"checkpoints/{link}"):  # as a path and as a public name
            with pytest.raises(CheckpointError, match=f"^checkpoints/{link} is a symbolic link; the app does not "
                                                      "follow links"):  # the path is repeated as a public name
                checkpoint_folder(value, [checkpoints])


def test_a_real_checkpoint_folder_whose_weights_are_a_link_is_neither_listed_nor_loaded(tmp_path):
    """The folder policy holds for the files in it: a linked model.safetensors (or card.json) could be any file of
    the server."""
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "linked").mkdir(parents=True)
    shutil.copy(IPS / "card.json", checkpoints / "linked" / "card.json")
    (checkpoints / "linked" / "model.safetensors").symlink_to(IPS / "model.safetensors")
    assert list_checkpoints([checkpoints]) == []
    for value in (str(checkpoints / "linked"), "checkpoints/linked"):
        with pytest.raises(CheckpointError, match="^checkpoints/linked: its model.safetensors is a symbolic link; "
                                                  "the app does not follow links"):
            checkpoint_folder(value, [checkpoints])


def test_a_name_too_long_for_a_path_is_a_name_that_was_not_offered():
    """A 5,000-character model name gave "[Errno 36] File name too long" and a traceback."""
    for name in ("checkpoints/" + "x" * 5000, "x" * 5000):
        with pytest.raises(CheckpointError, match="is not one of the checkpoints offered here") as refused:
            checkpoint_folder(name, [DEMO])
        assert len(str(refused.value)) < 300  # the name is not repeated whole


def test_a_linked_root_is_named_by_its_real_folder(tmp_path):
    """The given folders may be links: names use the folder they lead to, as ``Checkpoint.path`` is resolved."""
    shutil.copytree(IPS, tmp_path / "store" / "ips")
    (tmp_path / "checkpoints").symlink_to(tmp_path / "store", target_is_directory=True)
    assert [name for _, name in list_checkpoints([tmp_path / "checkpoints"])] == ["store/ips"]
    assert checkpoint_folder("store/ips", [tmp_path / "checkpoints"]) == (tmp_path / "store" / "ips").resolve()


# ------------------------------------------------------------------ CUDA (the app picks it when present)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_app_functions_on_cuda_models_give_the_cpu_numbers(mnist, models, tmp_path):
    # cuDNN convolutions use TF32 by default: agreement to about 1e-3, not to float32 rounding
    on_gpu = {name: load_checkpoint(path, "cuda").model for name, path in (("A", CE), ("B", IPS))}
    i, j = torch.nonzero(mnist.test_labels == 5).flatten()[:2].tolist()
    cpu_pair = swap_pair(mnist, mnist.test_images[i], mnist.test_images[j], 5, 7, 0.5, 2, models)
    gpu_pair = swap_pair(mnist, mnist.test_images[i], mnist.test_images[j], 5, 7, 0.5, 2, on_gpu)
    assert torch.equal(cpu_pair.mask, gpu_pair.mask)
    for name in models:
        assert gpu_pair.scores[name].kd == pytest.approx(cpu_pair.scores[name].kd, rel=1e-2, abs=1e-3)
        assert gpu_pair.scores[name].swapped_a == pytest.approx(cpu_pair.scores[name].swapped_a, abs=2e-3)
    cpu_gaps = confidence_gaps(mnist, models, 100, 7, 0.5, seed=1)
    gpu_gaps = confidence_gaps(mnist, on_gpu, 100, 7, 0.5, seed=1)
    assert torch.equal(cpu_gaps.anchors, gpu_gaps.anchors)
    assert torch.allclose(cpu_gaps.confidence_a["B"], gpu_gaps.confidence_a["B"], atol=2e-3)
    shutil.copytree(CE, tmp_path / "ce")
    logits = split_logits(load_checkpoint(tmp_path / "ce", "cuda"), mnist)
    assert logits.device.type == "cpu"
    assert torch.allclose(logits, predict_logits(models["A"], mnist, mnist.test_images), atol=2e-2)
    inputs = mnist.normalize(mnist.test_images[:2])
    targets = mnist.test_labels[:2].tolist()
    for method in ("GradCAM", "ScoreCAM"):
        gpu_cams = compute_cams(on_gpu["B"], inputs, targets, method=method)
        assert gpu_cams.shape == (2, 28, 28) and gpu_cams.min() >= 0 and gpu_cams.max() <= 1
        assert np.allclose(gpu_cams, compute_cams(models["B"], inputs, targets, method=method), atol=2e-2)
