"""Tab 3, Grad-CAM: where each model looks, on a test image, a swapped view from tab 1, or an upload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F

from explorer.analysis.cam import CAM_METHODS, compute_cams
from explorer.analysis.render import cam_overlay, render_image
from explorer.analysis.uploads import read_upload
from explorer.data import Dataset
from explorer.models import cam_layers
from explorer.ui.common import MODEL_WORK, AppContext, Header, model_work
from explorer.ui.swap import UPLOAD_TYPES, SwapTab, class_label

__all__ = ["DEFAULT_LAYER", "SOURCES", "TARGETS", "GradCamTab", "build"]

SOURCES = ("test image", "swapped view a′ (Patch swap tab)", "swapped view b′ (Patch swap tab)", "upload")
TARGETS = ("true class", "predicted class")
DEFAULT_LAYER = "each model's default"


@dataclass
class GradCamTab:
    """The controls the Compare tab sets when it opens a sample here, and the handler that redraws."""

    source: gr.Radio
    test_index: gr.Slider
    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]
    show: Callable[..., tuple]  # the handler: inputs -> outputs


def _source_image(source: str, dataset: Dataset, index: float, upload: str | None, pair: dict[str, Any] | None,
                  notes: list[str]) -> tuple[torch.Tensor, int | None, dict[str, Any], np.ndarray | None, int | None]:
    """(uint8 image [C, H, W], true label or None, description, swap mask or None, patch size or None)."""
    if source == SOURCES[0]:
        i = int(index)
        if not 0 <= i < len(dataset.test_labels):
            raise ValueError(f"test index {i} is out of range; {dataset.name} has {len(dataset.test_labels)} "
                             "test images")
        return dataset.test_images[i], int(dataset.test_labels[i]), {"source": "test", "test_index": i}, None, None
    if source in SOURCES[1:3]:
        if not pair or pair.get("dataset") != dataset.name:
            raise ValueError(f"no swapped pair of {dataset.name} yet: make one in the Patch swap tab first")
        view = 0 if source == SOURCES[1] else 1
        return (torch.from_numpy(pair["swapped"][view]), pair["label"], {"source": "swapped", "view": "ab"[view]},
                pair["mask"], pair["patch_size"])
    if source == SOURCES[3]:
        if not upload:
            raise ValueError("upload an image first (PNG, JPEG, WebP or BMP)")
        result = read_upload(upload, dataset)
        notes.extend(result.notes)
        return result.image, None, {"source": "upload", "file": Path(upload).name}, None, None
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")


def build(ctx: AppContext, header: Header, swap: SwapTab, demo: gr.Blocks) -> GradCamTab:
    dataset0 = ctx.dataset("mnist5k")

    def layer_choices(dataset_name: str, model_a: str | None, model_b: str | None) -> list[str]:
        """The per-model default, then the CAM layers that both chosen models have."""
        try:
            checkpoints = ctx.models(ctx.dataset(dataset_name), model_a, model_b).values()
        except ValueError:
            return [DEFAULT_LAYER]  # the tab's own event reports the problem
        names = [cam_layers(c.model) for c in checkpoints]
        return [DEFAULT_LAYER, *([n for n in names[0] if all(n in other for other in names[1:])] if names else [])]

    gr.Markdown("Class activation maps of model A and model B side by side, computed with the "
                "[grad-cam](https://github.com/jacobgil/pytorch-grad-cam) package. Over a swapped view the patch "
                "grid is drawn and the patches that came from the other image are outlined.")
    with gr.Row(equal_height=True):
        source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Image", scale=3)
        test_index = gr.Slider(0, len(dataset0.test_labels) - 1, value=0, step=1, label="Test image index", scale=2)
        upload = gr.File(label="Upload", file_types=UPLOAD_TYPES, height=110, scale=1, elem_id="cam-upload")
    with gr.Row(equal_height=True):
        method = gr.Dropdown(list(CAM_METHODS), value="GradCAM", label="Method")
        layer = gr.Dropdown(layer_choices(header.dataset.value, header.model_a.value, header.model_b.value),
                            value=DEFAULT_LAYER, label="Target layer", allow_custom_value=True,
                            info="the default is each model's deepest conv block")
        target = gr.Dropdown([*TARGETS, *dataset0.class_names], value=TARGETS[0], label="Target class")
        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity")
    images, labels = [], []
    with gr.Row(equal_height=True):
        for title in ("input", "model A", "model B"):
            with gr.Column(min_width=200):
                images.append(gr.Image(label=title, format="png", interactive=False, height=300,
                                       elem_classes="pixelated", buttons=["download"],
                                       elem_id=f"cam-image-{title.split()[-1].lower()}"))
                if title == "input":
                    info = gr.Markdown(elem_id="cam-info")
                else:
                    labels.append(gr.Label(num_top_classes=3, label=f"{title}: top-3 predictions"))
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="gradcam")

    @model_work(ctx, small=True)
    def show(dataset_name: str, model_a: str | None, model_b: str | None, source: str, test_index: float,
             upload: str | None, method: str, layer: str, target: str, opacity: float, pair: dict[str, Any] | None):
        dataset = ctx.dataset(dataset_name)
        notes: list[str] = []
        image, true_label, description, mask, patch_size = _source_image(source, dataset, test_index, upload, pair,
                                                                         notes)
        for note in notes:
            gr.Info(note)
        checkpoints = ctx.models(dataset, model_a, model_b)
        if not checkpoints:
            raise ValueError("choose a checkpoint for model A or model B")
        if target == TARGETS[0] and true_label is None:
            gr.Info("an upload has no true class: showing each model's predicted class instead")
        inputs = dataset.normalize(image[None])
        pictures, top3, result_models = {}, {}, {}
        for name, checkpoint in checkpoints.items():
            with torch.no_grad():
                probabilities = F.softmax(checkpoint.model(inputs.to(ctx.device)).float(), dim=1)[0].cpu()
            predicted = int(probabilities.argmax())
            if target == TARGETS[0]:
                target_class = predicted if true_label is None else true_label
            elif target == TARGETS[1]:
                target_class = predicted
            else:
                target_class = class_label(dataset, target)
            layer_name = cam_layers(checkpoint.model)[0] if layer == DEFAULT_LAYER else layer
            cam = compute_cams(checkpoint.model, inputs, [target_class], layer_name, method)[0]
            overlay = cam_overlay(image, cam, float(opacity))
            pictures[name] = render_image(overlay, patch_size, mask)
            values, order = probabilities.topk(min(3, dataset.num_classes))
            top3[name] = {dataset.class_names[int(i)]: float(v) for v, i in zip(values, order, strict=True)}
            peak = np.unravel_index(int(cam.argmax()), cam.shape)
            result_models[name] = {
                "checkpoint": str(checkpoint.path), "layer": layer_name, "target_class": target_class,
                "predicted": predicted, "top3": [[k, v] for k, v in top3[name].items()],
                "cam_shape": list(cam.shape), "cam_min": float(cam.min()), "cam_max": float(cam.max()),
                "cam_mean": float(cam.mean()), "cam_peak": [int(peak[0]), int(peak[1])]}
        names = list(checkpoints)
        slots = [next((n for n in names if n.startswith(slot)), None) for slot in ("A", "B")]
        truth = "unknown" if true_label is None else dataset.class_names[true_label]
        result = {"dataset": dataset.name, **description, "true_class": truth, "method": method, "target": target,
                  "models": result_models, "notes": notes}
        return (render_image(image, patch_size, mask), *(pictures.get(n) if n else None for n in slots),
                *(top3[n] if n else None for n in slots),
                f"true class: **{truth}**" + (f" · {description['source']}" if true_label is None else ""), result)

    inputs = [header.dataset, header.model_a, header.model_b, source, test_index, upload, method, layer, target,
              opacity, swap.pair]
    outputs = [*images, *labels, info, data]
    gr.on([demo.load, source.input, test_index.release, method.input, layer.input, target.input, opacity.release,
           header.model_a.input, header.model_b.input], show, inputs, outputs, api_name="gradcam",
          trigger_mode="always_last", concurrency_id=MODEL_WORK, concurrency_limit=1)
    upload.upload(lambda: SOURCES[3], None, source, api_name="gradcam_use_upload", queue=False).then(
        show, inputs, outputs, api_name="gradcam_upload", concurrency_id=MODEL_WORK, concurrency_limit=1)

    @model_work(ctx)
    def refresh_layers(dataset_name: str, model_a: str | None, model_b: str | None, current: str) -> gr.Dropdown:
        choices = layer_choices(dataset_name, model_a, model_b)
        return gr.Dropdown(choices=choices, value=current if current in choices else DEFAULT_LAYER)

    layer.focus(refresh_layers, [header.dataset, header.model_a, header.model_b, layer], layer,
                api_name="gradcam_layers", concurrency_id=MODEL_WORK, concurrency_limit=1, show_progress="hidden")

    def change_dataset(dataset_name: str):
        dataset = ctx.dataset(dataset_name)
        return (gr.Slider(maximum=len(dataset.test_labels) - 1, value=0),
                gr.Dropdown(choices=[*TARGETS, *dataset.class_names], value=TARGETS[0]))

    header.dataset.input(model_work(ctx)(change_dataset), header.dataset, [test_index, target],
                         api_name="gradcam_dataset")
    return GradCamTab(source, test_index, inputs, outputs, show)
