"""Tab 3, Grad-CAM: where each model looks, on a test image, a swapped view from tab 1, or an upload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch
from torch import nn

from explorer.analysis.cam import CAM_METHODS, explain
from explorer.analysis.inputs import class_label, whole_number
from explorer.analysis.payloads import gradcam_payload, top_classes
from explorer.analysis.render import cam_overlay, render_image
from explorer.analysis.uploads import UploadError, read_upload
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.models import SmallCNN, cam_layers
from explorer.ui import faithfulness
from explorer.ui.binding import flatten, handler, model_handler, restore_refused
from explorer.ui.components import choice_dropdown, show_drawn_values, typed_values_js
from explorer.ui.context import LIGHT_EVENTS, AppContext
from explorer.ui.header import Header
from explorer.ui.swap import UPLOAD_TYPES, SwapTab

__all__ = ["DEFAULT_LAYER", "SAME_MAP_METHODS", "SOURCES", "TAB_ID", "TARGETS", "CamControls", "CamUpload", "CamView",
           "GradCamTab", "build", "change_dataset", "layer_choices", "refresh_layers", "same_map_note", "show_cams",
           "show_upload", "source_controls"]

TAB_ID = "gradcam"
SOURCES = ("test image", "swapped view a′ (Patch swap tab)", "swapped view b′ (Patch swap tab)", "upload")
TARGETS = ("true class", "predicted class")
DEFAULT_LAYER = "each model's default"
# On a layer followed only by global average pooling and a linear layer, the gradient of a class score is the
# same at every position of a channel (the head's weight / H·W), so these three weigh the channels alike and
# give one map; they differ on earlier layers.
SAME_MAP_METHODS = ("GradCAM", "HiResCAM", "XGradCAM")


class CamView(NamedTuple):
    """One answer of ``show_cams`` (or its components): the input, each model's map and top-3, the info line, the
    JSON."""

    image: Any
    cam_a: Any
    cam_b: Any
    top_a: Any
    top_b: Any
    info: Any
    data: Any  # the JSON of /gradcam


class CamUpload(NamedTuple):
    """One answer of ``show_upload`` (or its components): the source, the upload field, the test-index slider and
    the maps."""

    source: Any
    upload: Any
    test_index: Any
    view: CamView


class CamControls(NamedTuple):
    """The controls a dataset switch resets (``change_dataset``, or their components)."""

    source: Any
    test_index: Any
    target: Any
    layer: Any


@dataclass
class GradCamTab:
    """The controls the Compare tab sets when it opens a sample here, and the handler that redraws."""

    source: gr.Radio
    test_index: gr.Slider
    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]  # a ``CamView``'s components, flattened
    show: Callable[..., list]  # ``show_cams`` bound to the app: inputs -> outputs
    tab_id: str = TAB_ID


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------
def _source_image(source: str, dataset: Dataset, index: float, upload: str | None, pair: dict[str, Any] | None,
                  notes: list[str]) -> tuple[torch.Tensor, int | None, dict[str, Any], np.ndarray | None, int | None]:
    """(uint8 image [C, H, W], true label or None, description, swap mask or None, patch size or None)."""
    if source == SOURCES[0]:
        i = whole_number(index, "test index")  # int() drew #2 for a typed 2.5
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


def _target_class(target: str, true_label: int | None, dataset: Dataset) -> int | None:
    """The class whose CAM is shown: the true class, a named class, or None for each model's predicted class."""
    if target == TARGETS[0]:
        return true_label  # None for an upload: the predicted class
    if target == TARGETS[1]:
        return None
    return class_label(dataset, target)


def _pooled_linear_head(model: nn.Module, layer: str) -> bool:
    """``layer`` feeds only global average pooling and a linear layer: small_cnn's block3, a ResNet's layer4."""
    if isinstance(model, SmallCNN):
        return layer == "block3"
    return layer == "layer4" and isinstance(getattr(model, "avgpool", None), nn.AdaptiveAvgPool2d) and isinstance(
        getattr(model, "fc", None), nn.Linear)


def same_map_note(method: str, checkpoints: dict[str, Checkpoint], layers: dict[str, str]) -> str:
    """Why GradCAM, HiResCAM and XGradCAM show the same map here, when they do; else nothing."""
    pooled = all(_pooled_linear_head(c.model, layers[name]) for name, c in checkpoints.items())
    if method not in SAME_MAP_METHODS or not pooled:
        return ""
    return (f"{', '.join(SAME_MAP_METHODS)} give the same map on this layer: it feeds only global average pooling "
            "and a linear layer, so the gradient is the same at every position and all three weigh the channels "
            "alike. Pick an earlier layer (e.g. block2) to see them differ.")


def show_cams(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, source: str,
              test_index: float, upload: str | None, method: str, layer: str, target: str, opacity: float,
              pair: dict[str, Any] | None) -> CamView:
    """The input image, each model's CAM overlay and top-3, the true class (and notes), and the JSON (/gradcam)."""
    dataset = ctx.dataset(dataset_name)
    notes: list[str] = []
    image, true_label, description, mask, patch_size = _source_image(source, dataset, test_index, upload, pair, notes)
    for note in notes:
        gr.Info(note)
    checkpoints = ctx.models(dataset, model_a, model_b)
    if not checkpoints:  # a dataset without checkpoints yet: the image, and what to do
        return CamView(render_image(image, patch_size, mask), None, None, None, None,
                       f"no model chosen: pick model A or B above (checkpoints trained on {dataset.name})",
                       {"dataset": dataset.name, **description, "models": {}, "notes": notes})
    if target == TARGETS[0] and true_label is None:
        gr.Info("an upload has no true class: showing each model's predicted class instead")
    target_class = _target_class(target, true_label, dataset)
    inputs = dataset.normalize(image[None])
    cams = {name: explain(checkpoint.model, inputs, target_class, None if layer == DEFAULT_LAYER else layer, method)
            for name, checkpoint in checkpoints.items()}
    pictures = {name: render_image(cam_overlay(image, result.cam, float(opacity)), patch_size, mask)
                for name, result in cams.items()}
    slots = [next((n for n in cams if n.startswith(slot)), None) for slot in ("A", "B")]
    payload = gradcam_payload(dataset, description, true_label, method, target, cams, checkpoints, notes)
    info = f"true class: **{payload['true_class']}**" + (f" · {description['source']}" if true_label is None else "")
    note = same_map_note(method, checkpoints, {name: result.layer for name, result in cams.items()})
    return CamView(render_image(image, patch_size, mask), *(pictures.get(n) if n else None for n in slots),
                   *(top_classes(cams[n].probabilities, dataset.class_names) if n else None for n in slots),
                   info + (f"<br>{note}" if note else ""), payload)


def show_upload(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, source: str,
                test_index: float, upload: str | None, method: str, layer: str, target: str, opacity: float,
                pair: dict[str, Any] | None) -> CamUpload:
    """A new upload becomes the source; one that cannot be used is dropped with a warning and the view stays."""
    try:
        read_upload(upload, ctx.dataset(dataset_name)) if upload else None
    except UploadError as exc:
        gr.Warning(f"the upload is not used: {exc}")
        return CamUpload(gr.skip(), None, gr.skip(), CamView(*[gr.skip()] * len(CamView._fields)))
    return CamUpload(SOURCES[3], gr.skip(), source_controls(SOURCES[3]),
                     show_cams(ctx, dataset_name, model_a, model_b, SOURCES[3], test_index, upload, method, layer,
                               target, opacity, pair))


def source_controls(source: str) -> gr.Slider:
    """The test-index slider is live only when the source is a test image (a swapped view or an upload has none)."""
    return gr.Slider(interactive=source == SOURCES[0])


def layer_choices(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> list[str]:
    """The per-model default, then the CAM layers that both chosen models have."""
    try:
        checkpoints = ctx.models(ctx.dataset(dataset_name), model_a, model_b).values()
    except ValueError:
        return [DEFAULT_LAYER]  # the tab's own event reports the problem
    names = [cam_layers(c.model) for c in checkpoints]
    return [DEFAULT_LAYER, *([n for n in names[0] if all(n in other for other in names[1:])] if names else [])]


def refresh_layers(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
                   current: str) -> gr.Dropdown:
    """The layer picker's choices for the chosen models; the current layer stays if both still have it."""
    choices = layer_choices(ctx, dataset_name, model_a, model_b)
    return gr.Dropdown(choices=choices, value=current if current in choices else DEFAULT_LAYER)


def change_dataset(ctx: AppContext, dataset_name: str) -> CamControls:
    """A new dataset: a test image as the source (a swapped view or upload belongs to the old one), its range of
    test indices, its classes as CAM targets, and each model's default layer (a typed layer name belongs to the
    old dataset's models; kept, a refused one would refuse every map of the new dataset)."""
    dataset = ctx.dataset(dataset_name)
    return CamControls(SOURCES[0], gr.Slider(maximum=len(dataset.test_labels) - 1, value=0, interactive=True),
                       choice_dropdown([*TARGETS, *dataset.class_names], value=TARGETS[0]),
                       gr.Dropdown(choices=[DEFAULT_LAYER], value=DEFAULT_LAYER))


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
def _outputs() -> CamView:
    """Input image, model A's and B's CAMs, their top-3 labels, the info line and the JSON."""
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
    return CamView(*images, *labels, info, data)


def build(ctx: AppContext, header: Header, swap: SwapTab, demo: gr.Blocks) -> GradCamTab:
    """The tab; every control redraws on mouse, keyboard and typed values (``.input``, the last value wins)."""
    dataset0 = ctx.dataset(header.dataset.value)
    gr.Markdown("Class activation maps of model A and model B side by side, computed with the "
                "[grad-cam](https://github.com/jacobgil/pytorch-grad-cam) package. Over a swapped view the patch "
                "grid is drawn and the patches that came from the other image are outlined.")
    with gr.Row(equal_height=True):
        source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Image", scale=3)
        test_index = gr.Slider(0, len(dataset0.test_labels) - 1, value=0, step=1, label="Test image index", scale=2,
                               info="in the whole test split (used when the image is a test image)",
                               elem_id="cam-test-index", buttons=[])  # no ↺: it would not redraw
        upload = gr.File(label="Upload", file_types=UPLOAD_TYPES, height=110, scale=1, elem_id="cam-upload")
    with gr.Row(equal_height=True):
        method = choice_dropdown(list(CAM_METHODS), value="GradCAM", label="Method",
                                 info=f"{', '.join(SAME_MAP_METHODS)} coincide on a layer followed only by average "
                                      "pooling and a linear layer (the default layer here)")
        layer = gr.Dropdown(layer_choices(ctx, header.dataset.value, header.model_a.value, header.model_b.value),
                            value=DEFAULT_LAYER, label="Target layer", allow_custom_value=True, elem_id="cam-layer",
                            info="the default is each model's deepest conv block")
        target = choice_dropdown([*TARGETS, *dataset0.class_names], value=TARGETS[0], label="Target class")
        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="cam-opacity", buttons=[])
    view = _outputs()
    outputs = flatten(view)

    models = header.pickers
    inputs = [*models, source, test_index, upload, method, layer, target, opacity, swap.pair]
    work = {**LIGHT_EVENTS, "trigger_mode": "always_last"}
    show = model_handler(ctx, show_cams, small=True)
    drawn = gr.on([demo.load, source.input, test_index.input, method.input, layer.input, target.input, opacity.input,
                   upload.clear, *header.models_picked], show, inputs, outputs, api_name="gradcam",
                  js=typed_values_js(inputs), **work)
    show_drawn_values(drawn, [test_index, opacity])
    restore_refused(drawn, show, {"layer": layer})
    source.input(source_controls, source, test_index, api_name="gradcam_source", queue=False, show_progress="hidden")
    upload.upload(model_handler(ctx, show_upload, small=True), inputs,
                  flatten(CamUpload(source, upload, test_index, view)),
                  api_name="gradcam_upload", js=typed_values_js(inputs), **work)
    layer.focus(model_handler(ctx, refresh_layers), [*models, layer], layer, api_name="gradcam_layers",
                show_progress="hidden", **LIGHT_EVENTS)
    header.switched.then(handler(change_dataset, ctx), header.dataset,
                         flatten(CamControls(source, test_index, target, layer)),
                         api_name="gradcam_dataset").then(show, inputs, outputs, api_name="gradcam_after_dataset",
                                                          **work)
    faithfulness.build_section(ctx, header, method, layer, DEFAULT_LAYER)
    return GradCamTab(source, test_index, inputs, outputs, show, TAB_ID)
