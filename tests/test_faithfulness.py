"""explorer.analysis.faithfulness: the grad-cam package's ROAD and CAM-mult metrics, and CAM mass on swapped patches."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explorer.analysis.cam import compute_cams, grad_cam_module
from explorer.analysis.faithfulness import (
    cam_faithfulness,
    compare_faithfulness,
    foreign_cam_mass,
    foreign_cam_share,
)
from explorer.analysis.pairs import swapped_test_pairs
from explorer.data import load_dataset
from explorer.evaluate import predict_logits
from explorer.models import SmallCNN
from explorer.stats import mean_interval

# raised inside pytorch_grad_cam's RemoveMostRelevantFirst (np.float32 of a torch tensor), not by our code
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """SmallCNN after 40 Adam steps on digits (about 96 % test accuracy), so its maps mean something."""
    torch.manual_seed(0)
    model = SmallCNN(1, 10)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs, labels = digits.normalize(digits.train_images), digits.train_labels
    for _ in range(40):
        batch = torch.randint(0, len(labels), (64,))
        loss = F.cross_entropy(model(inputs[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    accuracy = (predict_logits(model, digits, digits.test_images).argmax(1) == digits.test_labels).float().mean()
    assert accuracy > 0.8
    return model


def _package_inputs(model, dataset, indices):
    inputs = dataset.normalize(dataset.test_images[indices])
    labels = dataset.test_labels[indices].tolist()
    target = grad_cam_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputSoftmaxTarget
    return inputs, compute_cams(model, inputs, labels, "block3", "GradCAM"), [target(c) for c in labels]


def test_scores_have_their_shapes_and_ranges_and_progress_is_reported_per_batch(digits, trained):
    fractions = []
    result = cam_faithfulness(trained, digits, 20, percentiles=(30, 70), seed=1, batch_size=8,
                              progress=fractions.append)
    assert fractions == [8 / 20, 16 / 20, 1.0]
    assert result.morf.shape == result.lerf.shape == (2, 20) and result.cam_mult_change.shape == (20,)
    assert (result.method, result.layer, result.percentiles) == ("GradCAM", "block3", (30, 70))
    assert len(set(result.indices.tolist())) == 20 and result.indices.max() < len(digits.test_labels)
    other_seed = cam_faithfulness(trained, digits, 4, percentiles=(50,), seed=2)
    assert not torch.equal(other_seed.indices, result.indices[:4])  # a random sample drawn with the seed
    for values in (result.morf, result.lerf, result.cam_mult_change):
        assert np.isfinite(values).all() and (np.abs(values) <= 1).all()  # changes of a probability
    assert np.allclose(result.road_combined, (result.lerf.mean(0) - result.morf.mean(0)) / 2)
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["metrics"]["ROAD MoRF"]["higher_is_more_faithful"] is False
    assert payload["metrics"]["ROAD combined"]["summary"]["mean"] == pytest.approx(result.road_combined.mean())
    assert [p["removed_percent"] for p in payload["per_percentile"]] == [70, 30]


def test_scores_equal_the_package_metrics_called_directly(digits, trained):
    road = grad_cam_module("pytorch_grad_cam.metrics.road")
    cam_mult = grad_cam_module("pytorch_grad_cam.metrics.cam_mult_image")
    state = torch.random.get_rng_state()
    result = cam_faithfulness(trained, digits, 16, percentiles=(30, 70), seed=5, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), state)  # the imputer's noise came from a forked generator
    inputs, cams, targets = _package_inputs(trained, digits, result.indices)
    torch.manual_seed(5)
    lerf = [road.ROADLeastRelevantFirst(p)(inputs, cams, targets, trained) for p in (30, 70)]
    morf = [road.ROADMostRelevantFirst(p)(inputs, cams, targets, trained) for p in (30, 70)]
    assert np.allclose(result.lerf, lerf, atol=1e-6) and np.allclose(result.morf, morf, atol=1e-6)
    torch.manual_seed(5)
    combined = road.ROADCombined(percentiles=[30, 70])(inputs, cams, targets, trained)
    assert np.allclose(result.road_combined, combined, atol=1e-6)
    change = cam_mult.CamMultImageConfidenceChange()(inputs, cams, targets, trained)
    assert np.allclose(result.cam_mult_change, change, atol=1e-6)
    assert np.abs(change).max() > 1e-3 and np.abs(np.asarray(morf)).max() > 1e-3  # real changes, not zeros


def test_comparison_is_b_minus_a_on_the_same_images(digits, trained):
    torch.manual_seed(1)
    untrained = SmallCNN(1, 10).eval()
    fractions = []
    comparison = compare_faithfulness({"random": untrained, "trained": trained}, digits, 12, percentiles=(50,),
                                      seed=2, batch_size=6, progress=fractions.append)
    assert fractions == [0.25, 0.5, 0.75, 1.0]
    assert torch.equal(comparison.a.indices, comparison.b.indices)
    difference = comparison.differences()["ROAD combined"]
    per_image = comparison.b.road_combined - comparison.a.road_combined
    assert difference.n == 12 and difference.mean == pytest.approx(per_image.mean())
    assert difference.std == pytest.approx(per_image.std(ddof=1))
    sentence = comparison.sentence()
    assert sentence.startswith("trained vs random on ROAD combined of GradCAM maps (block3): ")
    if difference.excludes_zero:
        assert ("trained is more faithful than random" in sentence) == (difference.low > 0)
    else:
        assert "no difference is shown" in sentence
    payload = json.loads(json.dumps(comparison.to_json()))
    assert set(payload["models"]) == {"random", "trained"} and payload["sentence"] == sentence
    with pytest.raises(ValueError, match="exactly two models; got 1"):
        compare_faithfulness({"trained": trained}, digits, 4)


def test_bad_arguments_are_refused(digits, trained):
    with pytest.raises(ValueError, match="number of images must be at least 1; got 0"):
        cam_faithfulness(trained, digits, 0)
    with pytest.raises(ValueError, match="digits has 359 test images; asked for 360"):
        cam_faithfulness(trained, digits, 360)
    with pytest.raises(ValueError, match="percentiles must be between 0 and 100"):
        cam_faithfulness(trained, digits, 4, percentiles=(0, 50))
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam_faithfulness(trained, digits, 4, method="MagicCAM")
    with pytest.raises(ValueError, match="number of pairs must be at least 1; got 0"):
        foreign_cam_mass(trained, digits, 0, 4, 0.5, seed=0)


def test_foreign_share_by_hand():
    cams = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4)] * 2 + [np.zeros((4, 4), np.float32)])
    masks = torch.tensor([[[True, False], [False, False]],  # top-left 2x2: 0 + 1 + 4 + 5 = 10 of 120
                          [[False, True], [True, False]],  # top-right 2 + 3 + 6 + 7, bottom-left 8 + 9 + 12 + 13
                          [[True, True], [True, True]]])  # an all-zero map has no mass to share
    shares = foreign_cam_share(cams, masks)
    assert shares[0] == pytest.approx(10 / 120) and shares[1] == pytest.approx(60 / 120) and np.isnan(shares[2])
    with pytest.raises(ValueError, match="one mask"):
        foreign_cam_share(cams, masks[:2])


def test_foreign_mass_of_the_gaps_tabs_pairs(digits, trained):
    in_training_mode = copy.deepcopy(trained).train()  # the maps must still use batch norm's running statistics
    result = foreign_cam_mass(in_training_mode, digits, 10, 4, 0.5, seed=3, batch_size=7)
    assert in_training_mode.training
    pairs = swapped_test_pairs(digits, 10, 4, 0.5, seed=3)
    assert torch.equal(result.anchors, pairs.anchors) and result.foreign_area == 0.5  # 2 of 4 patches swapped
    views = torch.cat([pairs.view_a, pairs.view_b])
    cams = compute_cams(trained, digits.normalize(views), torch.cat([pairs.labels, pairs.labels]).tolist())
    expected = foreign_cam_share(cams, torch.cat([pairs.masks, pairs.masks]))
    assert np.allclose(np.concatenate([result.share_a, result.share_b]), expected, atol=1e-6, equal_nan=True)
    finite = result.pair_share[~np.isnan(result.pair_share)]
    assert ((finite >= 0) & (finite <= 1)).all() and len(finite) == 10 - result.empty_pairs
    assert result.summary().mean == pytest.approx(mean_interval(finite).mean)
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["foreign_area"] == 0.5 and len(payload["pairs"]) == 10
    assert payload["pairs"][0]["share_a"] == pytest.approx(float(result.share_a[0]))
