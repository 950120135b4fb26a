"""Class activation maps with the ``grad-cam`` package (pytorch-grad-cam), hooks always released.

pytorch-grad-cam registers forward hooks on the target layer; a forgotten CAM object would keep them on a
model the app caches and reuses. ``cam_extractor`` is a with-clause that removes them however the block
ends. Gradients are switched on inside (a web server may call us under ``torch.no_grad``), the model's
parameter gradients are cleared afterwards, and every sample gets its own target class. The package is
imported on first use: it pulls in SciPy, scikit-learn and OpenCV, seconds that the app's start need not pay.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import tqdm
from torch import Tensor, nn

from explorer.models import cam_layers

if TYPE_CHECKING:
    from pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["CAM_METHODS", "ModelCam", "cam_extractor", "compute_cams", "explain", "grad_cam_module", "preload_cam"]

CAM_METHODS = {  # the name shown -> the pytorch_grad_cam class
    "GradCAM": "GradCAM",
    "GradCAM++": "GradCAMPlusPlus",
    "XGradCAM": "XGradCAM",
    "HiResCAM": "HiResCAM",
    "LayerCAM": "LayerCAM",
    "EigenCAM": "EigenCAM",
    "ScoreCAM": "ScoreCAM",
}


_IMPORT_LOCK = threading.Lock()


def grad_cam_module(name: str = "pytorch_grad_cam") -> ModuleType:
    """Import (a module of) the grad-cam package under one lock.

    Two threads importing it at once (a preload and a request) can see torchvision half-initialised.
    """
    with _IMPORT_LOCK:
        return importlib.import_module(name)


def preload_cam() -> None:
    """Import the grad-cam package now (seconds), e.g. once a server is up, rather than on the first CAM."""
    grad_cam_module()


def _layer(model: nn.Module, name: str) -> nn.Module:
    allowed = cam_layers(model)
    if name not in allowed:
        raise ValueError(f"layer {name!r} is not a CAM layer of {type(model).__name__}; choose one of {allowed}")
    return model.get_submodule(name)


def _quiet_progress_bars(module_name: str) -> None:
    """The package's module draws a tqdm bar per CAM into the server's log; give it one that is disabled."""
    module = grad_cam_module(module_name)
    if not isinstance(module.tqdm, SimpleNamespace):
        module.tqdm = SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))


@contextmanager
def cam_extractor(model: nn.Module, layer: str, method: str = "GradCAM") -> Iterator[BaseCAM]:
    """A pytorch-grad-cam object on ``model``'s ``layer``; its hooks are removed when the block ends."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    cam_class = getattr(grad_cam_module(), CAM_METHODS[method])
    cam = cam_class(model=model, target_layers=[_layer(model, layer)])
    if method == "ScoreCAM":
        cam.batch_size = 256  # one forward per image for our models' widths instead of 16-channel slices
        _quiet_progress_bars("pytorch_grad_cam.score_cam")
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def compute_cams(model: nn.Module, inputs: Tensor, targets: Sequence[int], layer: str | None = None,
                 method: str = "GradCAM") -> np.ndarray:
    """CAMs [B, H, W] in [0, 1] for normalised inputs [B, C, H, W], one target class per sample.

    ``layer`` defaults to the model's recommended CAM layer (``models.cam_layers``).
    """
    if len(targets) != len(inputs):
        raise ValueError(f"need one target class per sample; got {len(targets)} targets for {len(inputs)} inputs")
    target = grad_cam_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget
    layer = layer or cam_layers(model)[0]
    device = next(model.parameters()).device
    inputs = inputs.detach().to(device).requires_grad_(True)
    with torch.enable_grad(), cam_extractor(model, layer, method) as cam:
        maps = cam(input_tensor=inputs, targets=[target(int(t)) for t in targets])
    return np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, 1.0)


@dataclass(frozen=True)
class ModelCam:
    """What one model says about one image: its class probabilities and where it looks for the target class."""

    layer: str  # the CAM layer used
    probabilities: Tensor  # [K] softmax, on the CPU
    predicted: int
    target_class: int
    cam: np.ndarray  # [H, W] in [0, 1]


def explain(model: nn.Module, inputs: Tensor, target_class: int | None, layer: str | None = None,
            method: str = "GradCAM") -> ModelCam:
    """The prediction on one normalised image [1, C, H, W] and the CAM of ``target_class`` (None: the predicted one).

    ``layer`` defaults to the model's recommended CAM layer (``models.cam_layers``).
    """
    device = next(model.parameters()).device
    with torch.no_grad():
        probabilities = F.softmax(model(inputs.to(device)).float(), dim=1)[0].cpu()
    predicted = int(probabilities.argmax())
    target = predicted if target_class is None else target_class
    layer = layer or cam_layers(model)[0]
    return ModelCam(layer, probabilities, predicted, target, compute_cams(model, inputs, [target], layer, method)[0])
