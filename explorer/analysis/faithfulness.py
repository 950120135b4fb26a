"""CAM faithfulness: do a model's class activation maps point at what its prediction depends on?

Why: two models can draw equally plausible maps; a faithful map is one whose "important" pixels the model
really uses. The metrics are the grad-cam package's (``pytorch_grad_cam.metrics``), called here, not
re-implemented. Each is a change of the true-class softmax probability (``ClassifierOutputSoftmaxTarget``),
after minus before the perturbation, per image, for the map of the true class:

- ROAD MoRF at percentile p (``ROADMostRelevantFirst(p)``): the pixels whose CAM value is at or above the map's
  p-th percentile, the (100 - p) % most relevant, are replaced by noisy linear imputation from their
  neighbours. LOWER (a larger drop) = more faithful: removing what the map calls important should hurt.
- ROAD LeRF at p (``ROADLeastRelevantFirst(p)``): the same on 1 - CAM, so the (100 - p) % least relevant
  pixels are imputed. HIGHER (closer to no change) = more faithful.
- ROAD combined (the package's ``ROADCombined``): (mean over p of LeRF - mean over p of MoRF) / 2.
  HIGHER = more faithful.
- CAM-mult confidence change (``CamMultImageConfidenceChange``): the normalised input multiplied by the map
  (pixels with CAM 0 become the training mean). HIGHER = more faithful: the map keeps the evidence.

Package conventions worth knowing: p names the threshold, not the share removed (both orders impute the
(100 - p) % of pixels beyond it); the threshold test is a strict ``cam < threshold``, so when more than p %
of a map is exactly 0 (GradCAM's ReLU does that), MoRF at p imputes the whole image. The imputer adds
Gaussian noise (std 0.01) from torch's global generator: it is seeded with ``seed`` inside
``torch.random.fork_rng``, so results repeat and the caller's random state is untouched.

Speed: every package metric call also re-runs the model on the unperturbed batch; we call the metrics with
``return_diff=False`` and subtract one "before" forward per batch (same numbers, half the forwards). The
ROAD imputer (a sparse solve per image per percentile, in a Python loop inside the package) dominates the
rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explorer.analysis.cam import compute_cams, grad_cam_module
from explorer.analysis.pairs import swapped_test_pairs
from explorer.data import Dataset
from explorer.ips import swap_patches
from explorer.models import cam_layers
from explorer.stats import MeanInterval, comparison_sentence, mean_interval

__all__ = ["DEFAULT_PERCENTILES", "HIGHER_IS_MORE_FAITHFUL", "CamFaithfulness", "FaithfulnessComparison",
           "ForeignCamMass", "cam_faithfulness", "compare_faithfulness", "foreign_cam_mass", "foreign_cam_share"]

DEFAULT_PERCENTILES = (20, 40, 60, 80)  # impute 80, 60, 40 and 20 % of the pixels
HIGHER_IS_MORE_FAITHFUL = {"ROAD MoRF": False, "ROAD LeRF": True, "ROAD combined": True,
                           "CAM-mult confidence change": True}

Progress = Callable[[float], None]  # called with the fraction done, 0 < f <= 1


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The metrics call the model directly: batch norm must use its running statistics, not the batch's."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _true_class_probability(model: nn.Module, inputs: Tensor, labels: Tensor) -> np.ndarray:
    with torch.no_grad():
        probabilities = F.softmax(model(inputs).float(), dim=1)
    return probabilities.gather(1, labels[:, None].to(probabilities.device)).squeeze(1).cpu().numpy()


def _check_counts(count: int, what: str, batch_size: int) -> None:
    if count < 1:
        raise ValueError(f"the number of {what} must be at least 1; got {count}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1; got {batch_size}")


# --------------------------------------------------------------------------------------------------
# ROAD and CAM-mult over test images
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CamFaithfulness:
    """One model's per-image faithfulness scores (true-class probability changes; signs in the module docstring)."""

    method: str
    layer: str
    percentiles: tuple[int, ...]
    indices: Tensor  # [N] test indices, a random sample drawn with the seed
    morf: np.ndarray  # [P, N] ROAD most-relevant-first, one row per percentile
    lerf: np.ndarray  # [P, N] ROAD least-relevant-first
    cam_mult_change: np.ndarray  # [N]

    @property
    def road_combined(self) -> np.ndarray:
        """[N]: (mean LeRF - mean MoRF) / 2 over the percentiles, as the package's ROADCombined defines it."""
        return (self.lerf.mean(0) - self.morf.mean(0)) / 2

    def scores(self) -> dict[str, np.ndarray]:
        """Per-image scores [N] by metric name (the keys of HIGHER_IS_MORE_FAITHFUL)."""
        return {"ROAD MoRF": self.morf.mean(0), "ROAD LeRF": self.lerf.mean(0), "ROAD combined": self.road_combined,
                "CAM-mult confidence change": self.cam_mult_change}

    def to_json(self) -> dict:
        per_percentile = [{"percentile": p, "removed_percent": 100 - p, "morf": mean_interval(m).to_json(),
                           "lerf": mean_interval(lr).to_json()}
                          for p, m, lr in zip(self.percentiles, self.morf, self.lerf, strict=True)]
        metrics = {name: {"higher_is_more_faithful": HIGHER_IS_MORE_FAITHFUL[name],
                          "summary": mean_interval(values).to_json(), "per_image": values.tolist()}
                   for name, values in self.scores().items()}
        return {"method": self.method, "layer": self.layer, "test_indices": self.indices.tolist(),
                "metrics": metrics, "per_percentile": per_percentile}


def _sample_test_indices(dataset: Dataset, n_images: int, seed: int) -> Tensor:
    """A seeded random sample of test indices: a split may be ordered by class (mnist5k's is), so not the first N."""
    count = len(dataset.test_labels)
    if n_images > count:
        raise ValueError(f"{dataset.name} has {count} test images; asked for {n_images}")
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n_images]


def cam_faithfulness(model: nn.Module, dataset: Dataset, n_images: int = 200, method: str = "GradCAM",
                     layer: str | None = None, percentiles: Sequence[int] = DEFAULT_PERCENTILES, seed: int = 0,
                     batch_size: int = 50, progress: Progress | None = None) -> CamFaithfulness:
    """ROAD MoRF/LeRF at each percentile and the CAM-mult change for ``n_images`` random test images.

    ``layer`` defaults to the model's recommended CAM layer; ``progress`` is called after every batch.
    """
    _check_counts(n_images, "images", batch_size)
    percentiles = tuple(int(p) for p in percentiles)
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise ValueError(f"percentiles must be between 0 and 100 (exclusive); got {percentiles}")
    layer = layer or cam_layers(model)[0]
    road = grad_cam_module("pytorch_grad_cam.metrics.road")
    softmax_target = grad_cam_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputSoftmaxTarget
    lerf_metrics = [road.ROADLeastRelevantFirst(p) for p in percentiles]
    morf_metrics = [road.ROADMostRelevantFirst(p) for p in percentiles]
    cam_mult = grad_cam_module("pytorch_grad_cam.metrics.cam_mult_image").CamMultImageConfidenceChange()
    indices = _sample_test_indices(dataset, n_images, seed)
    images, labels = dataset.split("test")
    device = next(model.parameters()).device
    before, lerf, morf, multiplied = [], [], [], []
    with torch.random.fork_rng(devices=[]), _eval_mode(model):
        torch.manual_seed(seed)
        for start in range(0, n_images, batch_size):
            batch = indices[start:start + batch_size]
            inputs = dataset.normalize(images[batch].to(device))
            cams = compute_cams(model, inputs, labels[batch].tolist(), layer, method)
            targets = [softmax_target(int(c)) for c in labels[batch]]
            before.append(_true_class_probability(model, inputs, labels[batch]))
            # LeRF before MoRF: the order ROADCombined draws its imputation noise in
            lerf.append(np.stack([metric(inputs, cams, targets, model, return_diff=False) for metric in lerf_metrics]))
            morf.append(np.stack([metric(inputs, cams, targets, model, return_diff=False) for metric in morf_metrics]))
            multiplied.append(cam_mult(inputs, cams, targets, model, return_diff=False))
            if progress is not None:
                progress(min(start + batch_size, n_images) / n_images)
    unperturbed = np.concatenate(before)
    return CamFaithfulness(method, layer, percentiles, indices, np.concatenate(morf, axis=1) - unperturbed,
                           np.concatenate(lerf, axis=1) - unperturbed, np.concatenate(multiplied) - unperturbed)


@dataclass(frozen=True)
class FaithfulnessComparison:
    """Models A and B on the same test images; differences are B - A per image, summarised with a 95 % interval."""

    names: tuple[str, str]  # (A, B)
    a: CamFaithfulness
    b: CamFaithfulness

    def differences(self) -> dict[str, MeanInterval]:
        b_scores = self.b.scores()
        return {name: mean_interval(b_scores[name] - a_values) for name, a_values in self.a.scores().items()}

    def sentence(self) -> str:
        """Which model's maps are more faithful by ROAD combined, and by how much, as far as the interval shows."""
        name_a, name_b = self.names
        layers = self.a.layer if self.a.layer == self.b.layer else f"{self.a.layer} vs {self.b.layer}"
        return comparison_sentence(self.differences()["ROAD combined"], name_b, name_a,
                                   f"on ROAD combined of {self.a.method} maps ({layers})", unit="", noun="image",
                                   higher="more faithful", lower="less faithful", digits=3)

    def to_json(self) -> dict:
        name_a, name_b = self.names
        return {"models": {name_a: self.a.to_json(), name_b: self.b.to_json()},
                "difference_b_minus_a": {name: d.to_json() for name, d in self.differences().items()},
                "sentence": self.sentence()}


def compare_faithfulness(models: Mapping[str, nn.Module], dataset: Dataset, n_images: int = 200,
                         method: str = "GradCAM", layer: str | None = None,
                         percentiles: Sequence[int] = DEFAULT_PERCENTILES, seed: int = 0, batch_size: int = 50,
                         progress: Progress | None = None) -> FaithfulnessComparison:
    """``cam_faithfulness`` of two models (A, B in ``models``' order) on the same images with the same noise."""
    if len(models) != 2:
        raise ValueError(f"compare_faithfulness compares exactly two models; got {len(models)}")
    (name_a, model_a), (name_b, model_b) = models.items()

    def halfway(offset: float) -> Progress | None:
        return None if progress is None else (lambda fraction: progress(offset + fraction / 2))

    results = [cam_faithfulness(model, dataset, n_images, method, layer, percentiles, seed, batch_size,
                                halfway(offset)) for model, offset in ((model_a, 0.0), (model_b, 0.5))]
    return FaithfulnessComparison((name_a, name_b), *results)


# --------------------------------------------------------------------------------------------------
# CAM mass on swapped-in patches
# --------------------------------------------------------------------------------------------------
def foreign_cam_share(cams: np.ndarray, masks: Tensor) -> np.ndarray:
    """[B]: each map's share of its total CAM mass on the patches ``masks`` [B, gh, gw] marks; NaN for an all-0 map.

    cams [B, H, W] >= 0. The pixel mask comes from swapping an all-0 and an all-1 image at ``masks``, so its
    geometry is exactly the swap's.
    """
    if masks.dim() != 3 or cams.shape[0] != masks.shape[0]:
        raise ValueError(f"need one mask [gh, gw] per map; got maps {cams.shape} and masks {tuple(masks.shape)}")
    blank = torch.zeros((len(cams), 1, *cams.shape[1:]), dtype=torch.uint8)
    foreign, _ = swap_patches(blank, torch.ones_like(blank), masks.cpu())
    total = cams.sum(axis=(1, 2), dtype=np.float64)
    on_foreign = (cams * foreign[:, 0].numpy()).sum(axis=(1, 2), dtype=np.float64)
    return np.divide(on_foreign, total, out=np.full_like(total, np.nan), where=total > 0)


@dataclass(frozen=True)
class ForeignCamMass:
    """A model's CAM mass on the swapped-in (foreign) patches of swapped same-class test pairs."""

    method: str
    layer: str
    anchors: Tensor  # [N] test indices of view a's source
    partners: Tensor  # [N]
    labels: Tensor  # [N]
    share_a: np.ndarray  # [N] share of a''s CAM mass on b's patches (NaN: an all-zero map)
    share_b: np.ndarray  # [N] share of b''s CAM mass on a's patches
    foreign_area: float  # share of the pixels that are swapped in: what a map blind to the swap would give

    @property
    def pair_share(self) -> np.ndarray:
        """[N]: the mean of both views' shares (NaN when either map is all zero)."""
        return (self.share_a + self.share_b) / 2

    @property
    def empty_pairs(self) -> int:
        return int(np.isnan(self.pair_share).sum())

    def summary(self) -> MeanInterval:
        """Mean and 95 % interval of the pair shares over the pairs whose maps are not all zero."""
        shares = self.pair_share[~np.isnan(self.pair_share)]
        if shares.size == 0:
            raise ValueError("every CAM of these pairs is all zero; there is no mass to share")
        return mean_interval(shares)

    def to_json(self) -> dict:
        return {"method": self.method, "layer": self.layer, "foreign_area": self.foreign_area,
                "summary": self.summary().to_json(), "empty_pairs": self.empty_pairs,
                "pairs": [{"anchor": a, "partner": p, "label": y, "share_a": sa, "share_b": sb}
                          for a, p, y, sa, sb in zip(self.anchors.tolist(), self.partners.tolist(),
                                                     self.labels.tolist(), _json_floats(self.share_a),
                                                     _json_floats(self.share_b), strict=True)]}


def _json_floats(values: np.ndarray) -> list[float | None]:
    """NaN is not JSON: None instead."""
    return [None if np.isnan(v) else float(v) for v in values]


def foreign_cam_mass(model: nn.Module, dataset: Dataset, n_pairs: int, patch_size: int, ratio: float, seed: int,
                     method: str = "GradCAM", layer: str | None = None, label: int | None = None,
                     batch_size: int = 100) -> ForeignCamMass:
    """CAMs (true class) of both swapped views of the Gaps tab's test pairs, and their share on foreign patches."""
    _check_counts(n_pairs, "pairs", batch_size)
    layer = layer or cam_layers(model)[0]
    pairs = swapped_test_pairs(dataset, n_pairs, patch_size, ratio, seed, label)
    views = torch.cat([pairs.view_a, pairs.view_b])
    view_labels = torch.cat([pairs.labels, pairs.labels])
    device = next(model.parameters()).device
    with _eval_mode(model):
        cams = np.concatenate([compute_cams(model, dataset.normalize(views[i:i + batch_size].to(device)),
                                            view_labels[i:i + batch_size].tolist(), layer, method)
                               for i in range(0, len(views), batch_size)])
    share_a, share_b = np.split(foreign_cam_share(cams, torch.cat([pairs.masks, pairs.masks])), 2)
    return ForeignCamMass(method, layer, pairs.anchors, pairs.partners, pairs.labels, share_a, share_b,
                          float(pairs.masks.float().mean()))
