"""Tab 1, Patch swap: two images of one class, their swapped views, and what each model makes of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from explorer.analysis.inputs import class_label, class_size, random_class_pair, whole_number
from explorer.analysis.pairs import SwappedPair, class_test_index, patch_sizes, swap_pair
from explorer.analysis.payloads import swap_pair_payload
from explorer.analysis.render import render_image
from explorer.analysis.uploads import read_upload
from explorer.data import Dataset
from explorer.ips import default_patch_size
from explorer.ui import evidence
from explorer.ui.common import LIGHT_EVENTS, AppContext, Header, integer_dropdown, model_handler

__all__ = ["TAB_ID", "UPLOAD_TYPES", "SwapTab", "build", "change_dataset", "pick_class", "random_pair", "show_pair"]

TAB_ID = "swap"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
TITLES = ("a (original)", "b (original)", "a′ = a with b's patches", "b′ = b with a's patches")


@dataclass
class SwapTab:
    """The controls other tabs set when they open a pair here, and the handler that redraws the tab."""

    class_name: gr.Dropdown
    index_a: gr.Slider
    index_b: gr.Slider
    patch_size: gr.Dropdown
    ratio: gr.Slider
    seed: gr.Number
    upload_a: gr.File
    upload_b: gr.File
    pair: gr.State  # the last swapped pair, for the Grad-CAM tab
    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]
    show: Callable[..., tuple]  # ``show_pair`` bound to the app: inputs -> outputs
    tab_id: str = TAB_ID


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------
def _sample(dataset: Dataset, label: int, rank: Any, upload: str | None, which: str,
            notes: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample ``which`` (a or b): the upload if there is one, else the class's ``rank``-th test image."""
    if upload:
        result = read_upload(upload, dataset)
        notes.extend(f"upload {which}: {note}" for note in result.notes)
        return result.image, {"source": "upload", "file": Path(upload).name}
    index = class_test_index(dataset, label, whole_number(rank, f"sample {which}"))
    return dataset.test_images[index], {"source": "test", "test_index": index}


def _captions(pair: SwappedPair) -> list[str]:
    """Markdown under each of the four images: every model's true-class confidence, the teacher marked."""
    fields = ("original_a", "original_b", "swapped_a", "swapped_b")
    captions = []
    for i, field in enumerate(fields):
        parts = []
        for name, score in pair.scores.items():
            teaches = field.startswith("swapped") and field.endswith(score.teacher)
            parts.append(f"{name}: **{getattr(score, field):.3f}**" + (" ← **teacher**" if teaches else ""))
        head = "true-class confidence" if i < 2 else "true-class confidence of the swapped view"
        captions.append(f"{head}<br>" + "<br>".join(parts) if parts else "no model chosen")
    return captions


def _summary(pair: SwappedPair, dataset: Dataset) -> str:
    count, total = int(pair.mask.sum()), pair.mask.numel()
    lines = [f"Class **{dataset.class_names[pair.label]}** · {pair.patch_size}x{pair.patch_size}-pixel patches · "
             f"**{count} of {total}** patch positions exchanged (outlined)."]
    for name, s in pair.scores.items():
        student = "b" if s.teacher == "a" else "a"
        lines.append(f"- **{name}**: view **{s.teacher}′** teaches {student}′ "
                     f"({getattr(s, 'swapped_' + s.teacher):.3f} vs {getattr(s, 'swapped_' + student):.3f}); "
                     f"the pair's KL term KL(teacher ‖ student)·T² = **{s.kd:.4f}** (T = 4)")
    return "\n".join(lines)


def show_pair(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, class_name: str,
              index_a: float, index_b: float, upload_a: str | None, upload_b: str | None, patch_size: int,
              swap_ratio: float, seed: float) -> tuple:
    """The pair: four images, their captions, the summary, the JSON (/swap_pair) and the pair for Grad-CAM."""
    dataset = ctx.dataset(dataset_name)
    label = class_label(dataset, class_name)
    notes: list[str] = []
    image_a, source_a = _sample(dataset, label, index_a, upload_a, "a", notes)
    image_b, source_b = _sample(dataset, label, index_b, upload_b, "b", notes)
    if source_a == source_b:
        gr.Warning("a and b are the same image, so swapping changes nothing; pick two different samples")
    for note in notes:
        gr.Info(note)
    checkpoints = ctx.models(dataset, model_a, model_b)
    seed_int = whole_number(seed, "seed")
    pair = swap_pair(dataset, image_a, image_b, label, whole_number(patch_size, "patch size"), float(swap_ratio),
                     seed_int, {name: checkpoint.model for name, checkpoint in checkpoints.items()},
                     anchor=source_a.get("test_index"))
    pictures = [render_image(img, pair.patch_size, pair.mask) for img in (*pair.originals, *pair.swapped)]
    payload = swap_pair_payload(dataset, pair, swap_ratio, seed_int, source_a, source_b, checkpoints, notes)
    state = {"dataset": dataset.name, "label": label, "patch_size": pair.patch_size,
             "mask": pair.mask.numpy(), "swapped": pair.swapped.numpy()}
    return (*pictures, *_captions(pair), _summary(pair, dataset), payload, state)


def _sliders(dataset: Dataset, label: int, first: int, second: int) -> tuple[gr.Slider, gr.Slider]:
    """The two sample sliders over class ``label``'s test images, at ``first`` and ``second`` (clipped)."""
    top = class_size(dataset, label) - 1
    return gr.Slider(maximum=top, value=min(first, top)), gr.Slider(maximum=top, value=min(second, top))


def pick_class(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, class_name: str,
               upload_a: str | None, upload_b: str | None, patch_size: int, swap_ratio: float, seed: float) -> tuple:
    """A new class: samples 0 and 1 of it."""
    dataset = ctx.dataset(dataset_name)
    return (*_sliders(dataset, class_label(dataset, class_name), 0, 1),
            *show_pair(ctx, dataset_name, model_a, model_b, class_name, 0, 1, upload_a, upload_b, patch_size,
                       swap_ratio, seed))


def random_pair(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, patch_size: int,
                swap_ratio: float, seed: float) -> tuple:
    """A random class and two different random samples of it (uploads are cleared)."""
    dataset = ctx.dataset(dataset_name)
    label, rank_a, rank_b, _, _ = random_class_pair(dataset, np.random.default_rng())
    name = dataset.class_names[label]
    return (name, *_sliders(dataset, label, rank_a, rank_b), None, None,
            *show_pair(ctx, dataset_name, model_a, model_b, name, rank_a, rank_b, None, None, patch_size, swap_ratio,
                       seed))


def change_dataset(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, swap_ratio: float,
                   seed: float) -> tuple:
    """A new dataset: its classes, its patch sizes, its first two samples of the first class."""
    dataset = ctx.dataset(dataset_name)
    size = default_patch_size(dataset.image_size)
    name = dataset.class_names[0]
    return (gr.Dropdown(choices=list(dataset.class_names), value=name), *_sliders(dataset, 0, 0, 1),
            gr.Dropdown(choices=patch_sizes(dataset.image_size), value=size), None, None,
            *show_pair(ctx, dataset_name, model_a, model_b, name, 0, 1, None, None, size, swap_ratio, seed))


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
@dataclass
class _Controls:
    class_name: gr.Dropdown
    index_a: gr.Slider
    index_b: gr.Slider
    random_button: gr.Button
    patch_size: gr.Dropdown
    ratio: gr.Slider
    seed: gr.Number
    upload_a: gr.File
    upload_b: gr.File


def _controls(dataset: Dataset) -> _Controls:
    """The pair's class and samples, the swap's settings, the optional uploads."""
    count = class_size(dataset, 0)
    with gr.Row(equal_height=True):
        class_name = gr.Dropdown(list(dataset.class_names), value=dataset.class_names[0], label="Class", scale=1)
        index_a = gr.Slider(0, count - 1, value=0, step=1, label="Sample a (index within the class)", scale=2)
        index_b = gr.Slider(0, count - 1, value=1, step=1, label="Sample b (index within the class)", scale=2)
        random_button = gr.Button("Random pair", scale=1)
    with gr.Row(equal_height=True):
        patch_size = integer_dropdown(patch_sizes(dataset.image_size), value=default_patch_size(dataset.image_size),
                                      label="Patch size (pixels)", info="only sizes that divide the image size")
        ratio = gr.Slider(0, 1, value=0.5, step=0.05, label="Swap ratio", info="fraction of patch positions exchanged")
        seed = gr.Number(0, precision=0, label="Seed", info="with sample a, fixes which positions are exchanged")
    with gr.Accordion("Use your own images (optional)", open=False):
        gr.Markdown("PNG, JPEG, WebP or BMP up to 20 MB. An upload replaces sample a or b, is taken to show the "
                    "chosen class, and is converted to the dataset's channels and size.")
        with gr.Row():
            upload_a = gr.File(label="Image a", file_types=UPLOAD_TYPES, height=110, elem_id="swap-upload-a")
            upload_b = gr.File(label="Image b", file_types=UPLOAD_TYPES, height=110, elem_id="swap-upload-b")
    return _Controls(class_name, index_a, index_b, random_button, patch_size, ratio, seed, upload_a, upload_b)


def _outputs() -> list[gr.components.Component]:
    """The four images with their captions, the summary, the JSON and the pair's state, in ``show_pair``'s order."""
    images, captions = [], []
    with gr.Row(equal_height=True):
        for i, title in enumerate(TITLES):
            with gr.Column(min_width=180):
                images.append(gr.Image(label=title, format="png", interactive=False, height=300,
                                       elem_classes="pixelated", buttons=["download"], elem_id=f"swap-image-{i}"))
                captions.append(gr.Markdown(elem_classes="caption"))
    summary = gr.Markdown(elem_id="swap-summary")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="swap_pair")
    return [*images, *captions, summary, data, gr.State()]


def build(ctx: AppContext, header: Header, demo: gr.Blocks) -> SwapTab:
    gr.Markdown("Two test images of one class exchange the same random patch positions. Each model scores all "
                "four images; of the swapped pair, the view with the higher true-class confidence is the "
                "**teacher** of the other, and the KL term is what IPS training adds to the loss for this pair.")
    c = _controls(ctx.dataset("mnist5k"))
    outputs = _outputs()
    models = [header.dataset, header.model_a, header.model_b]
    inputs = [*models, c.class_name, c.index_a, c.index_b, c.upload_a, c.upload_b, c.patch_size, c.ratio, c.seed]
    work = LIGHT_EVENTS
    show = model_handler(ctx, show_pair, small=True)
    gr.on([demo.load, c.index_a.release, c.index_b.release, c.patch_size.input, c.ratio.release, c.seed.submit,
           c.seed.blur, c.upload_a.upload, c.upload_a.clear, c.upload_b.upload, c.upload_b.clear,
           header.model_a.input, header.model_b.input], show, inputs, outputs, api_name="swap_pair",
          trigger_mode="always_last", **work)
    c.class_name.input(model_handler(ctx, pick_class, small=True),
                       [*models, c.class_name, c.upload_a, c.upload_b, c.patch_size, c.ratio, c.seed],
                       [c.index_a, c.index_b, *outputs], api_name="swap_class", **work)
    c.random_button.click(model_handler(ctx, random_pair, small=True), [*models, c.patch_size, c.ratio, c.seed],
                          [c.class_name, c.index_a, c.index_b, c.upload_a, c.upload_b, *outputs],
                          api_name="random_pair", **work)
    header.dataset.input(model_handler(ctx, change_dataset, small=True), [*models, c.ratio, c.seed],
                         [c.class_name, c.index_a, c.index_b, c.patch_size, c.upload_a, c.upload_b, *outputs],
                         api_name="swap_dataset", **work)
    evidence.build_swap_section(ctx, header, outputs[-1])
    return SwapTab(c.class_name, c.index_a, c.index_b, c.patch_size, c.ratio, c.seed, c.upload_a, c.upload_b,
                   outputs[-1], inputs, outputs, show)
