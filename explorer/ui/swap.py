"""Tab 1, Patch swap: two images of one class, their swapped views, and what each model makes of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

from explorer.analysis.claims import distinct, teacher_phrase
from explorer.analysis.inputs import (
    class_label,
    class_size,
    patch_size_choices,
    random_class_pair,
    seed_number,
    whole_number,
)
from explorer.analysis.pairs import SwappedPair, class_test_index, swap_pair
from explorer.analysis.payloads import swap_pair_payload
from explorer.analysis.render import render_image
from explorer.analysis.uploads import UploadError, read_upload
from explorer.data import Dataset
from explorer.ips import default_patch_size
from explorer.training.config import TrainConfig
from explorer.ui import evidence
from explorer.ui.binding import flatten, model_handler, restore_refused
from explorer.ui.components import choice_dropdown, integer_dropdown, show_drawn_values, typed_values_js
from explorer.ui.context import LIGHT_EVENTS, AppContext
from explorer.ui.header import Header

__all__ = ["TAB_ID", "UPLOAD_TYPES", "RandomPair", "SwapControls", "SwapSamples", "SwapTab", "SwapUpload", "SwapView",
           "build", "change_dataset", "pick_class", "random_pair", "show_pair", "show_upload", "typed_values_js",
           "unswapped_views"]

TAB_ID = "swap"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp"]
TITLES = ("a (original)", "b (original)", "a′ = a with b's patches", "b′ = b with a's patches")


class SwapView(NamedTuple):
    """One answer of ``show_pair`` (or its components): the four images, their captions, the summary, the JSON and
    the pair for the Grad-CAM tab and the evidence section."""

    original_a: Any
    original_b: Any
    swapped_a: Any
    swapped_b: Any
    caption_a: Any
    caption_b: Any
    caption_swapped_a: Any
    caption_swapped_b: Any
    summary: Any
    data: Any  # the JSON of /swap_pair
    pair: Any  # the tab's state: the swapped views and the mask


class SwapUpload(NamedTuple):
    """One answer of ``show_upload`` (or its components): both upload fields and the pair."""

    upload_a: Any
    upload_b: Any
    view: SwapView


class SwapSamples(NamedTuple):
    """One answer of ``pick_class`` (or its components): both sample sliders and the pair."""

    index_a: Any
    index_b: Any
    view: SwapView


class RandomPair(NamedTuple):
    """One answer of ``random_pair`` (or its components): the class, both sliders, both uploads and the pair."""

    class_name: Any
    index_a: Any
    index_b: Any
    upload_a: Any
    upload_b: Any
    view: SwapView


class SwapControls(NamedTuple):
    """One answer of ``change_dataset`` (or its components): the controls a dataset switch resets and the pair."""

    class_name: Any
    index_a: Any
    index_b: Any
    patch_size: Any
    upload_a: Any
    upload_b: Any
    view: SwapView


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
    outputs: list[gr.components.Component]  # a ``SwapView``'s components, flattened
    show: Callable[..., list]  # ``show_pair`` bound to the app: inputs -> outputs
    tab_id: str = TAB_ID


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------
def _upload_notes(which: str, notes: list[str]) -> list[str]:
    return [f"upload {which}: {note}" for note in notes]


def _sample(dataset: Dataset, label: int, rank: Any, upload: str | None, which: str,
            notes: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample ``which`` (a or b): the upload if there is one, else the class's ``rank``-th test image."""
    if upload:
        result = read_upload(upload, dataset)
        notes.extend(_upload_notes(which, result.notes))
        return result.image, {"source": "upload", "file": Path(upload).name}
    rank = whole_number(rank, f"sample {which}")
    index = class_test_index(dataset, label, rank)
    return dataset.test_images[index], {"source": "test", "test_index": index, "rank_in_class": rank}


def _captions(pair: SwappedPair) -> list[str]:
    """Markdown under each of the four images: every model's true-class confidence, the teacher (or a tie) marked.

    The swapped views' confidences get as many digits as it takes to tell them apart (``claims.distinct``).
    """
    columns: list[list[str]] = [[], [], [], []]
    for name, score in pair.scores.items():
        numbers = (*distinct(score.original_a, score.original_b), *distinct(score.swapped_a, score.swapped_b))
        for i, number in enumerate(numbers):
            mark = ""
            if i >= 2 and score.tie:
                mark = " = **tie**"
            elif i >= 2 and "ab"[i - 2] == score.teacher:
                mark = " ← **teacher**"
            columns[i].append(f"{name}: **{number}**{mark}")
    heads = ["true-class confidence"] * 2 + ["true-class confidence of the swapped view"] * 2
    return [f"{head}<br>" + "<br>".join(parts) if parts else "no model chosen" for head, parts in zip(
        heads, columns, strict=True)]


def _source_text(source: dict[str, Any]) -> str:
    if source["source"] == "upload":
        return f"the upload {source['file']}"
    return f"test image #{source['test_index']} (sample {source['rank_in_class']} of the class)"


def unswapped_views(count: int, total: int) -> str:
    """What the views are when the swap exchanges nothing or everything (no view mixes the images), else ''."""
    if count == 0:
        return "no position is exchanged, so a′ is a and b′ is b: the views are the unswapped originals"
    if count == total:
        return "every position is exchanged, so a′ is b and b′ is a: the views are the originals, traded"
    return ""


def _summary(pair: SwappedPair, dataset: Dataset, source_a: dict[str, Any], source_b: dict[str, Any]) -> str:
    count, total = int(pair.mask.sum()), pair.mask.numel()
    unswapped = unswapped_views(count, total)
    lines = [f"Class **{dataset.class_names[pair.label]}** · a = {_source_text(source_a)}, b = "
             f"{_source_text(source_b)} · {pair.patch_size}x{pair.patch_size}-pixel patches · "
             f"**{count} of {total}** patch positions exchanged"
             + (f": **{unswapped}**." if unswapped else " (outlined).")]
    for name, s in pair.scores.items():
        lines.append(f"- **{name}**: " + ("of these unmixed views, " if unswapped else "")
                     + f"{teacher_phrase(s.swapped_a, s.swapped_b)}; the pair's KL term "
                     f"KL(teacher ‖ student)·T² = **{s.kd:.4f}** (T = 4)")
    if not pair.scores:
        lines.append("- no model chosen: pick model A or B above to see which view teaches")
    return "\n".join(lines)


def show_pair(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, class_name: str,
              index_a: float, index_b: float, upload_a: str | None, upload_b: str | None, patch_size: int,
              swap_ratio: float, seed: float) -> SwapView:
    """The pair: four images, their captions, the summary, the JSON (/swap_pair) and the pair for Grad-CAM.

    What an upload's conversion changed goes to the JSON's notes; ``show_upload`` announces it once, when the
    file arrives, not on every redraw."""
    dataset = ctx.dataset(dataset_name)
    label = class_label(dataset, class_name)
    notes: list[str] = []
    image_a, source_a = _sample(dataset, label, index_a, upload_a, "a", notes)
    image_b, source_b = _sample(dataset, label, index_b, upload_b, "b", notes)
    if source_a == source_b:
        gr.Warning("a and b are the same image, so swapping changes nothing; pick two different samples")
    checkpoints = ctx.models(dataset, model_a, model_b)
    seed_int = seed_number(seed)
    pair = swap_pair(dataset, image_a, image_b, label, whole_number(patch_size, "patch size"), float(swap_ratio),
                     seed_int, {name: checkpoint.model for name, checkpoint in checkpoints.items()},
                     anchor=source_a.get("test_index"))
    pictures = [render_image(img, pair.patch_size, pair.mask) for img in (*pair.originals, *pair.swapped)]
    payload = swap_pair_payload(dataset, pair, swap_ratio, seed_int, source_a, source_b, checkpoints, notes)
    state = {"dataset": dataset.name, "label": label, "patch_size": pair.patch_size,
             "mask": pair.mask.numpy(), "swapped": pair.swapped.numpy()}
    return SwapView(*pictures, *_captions(pair), _summary(pair, dataset, source_a, source_b), payload, state)


def show_upload(ctx: AppContext, arrived: str, dataset_name: str, model_a: str | None, model_b: str | None,
                class_name: str, index_a: float, index_b: float, upload_a: str | None, upload_b: str | None,
                patch_size: int, swap_ratio: float, seed: float) -> SwapUpload:
    """A new upload: an image that cannot be used is dropped with a warning (its slider's sample shows, as
    before the upload) instead of turning every panel into an error; then ``show_pair``.

    Both upload fields are answered: a dropped one cleared, a good one left as it is. What the conversion of the
    upload that ``arrived`` ("a" or "b") changed is announced here, once: the other one was announced when it came.
    """
    dataset = ctx.dataset(dataset_name)
    kept, fields = [], []
    for which, upload in (("a", upload_a), ("b", upload_b)):
        try:
            notes = read_upload(upload, dataset).notes if upload else []
        except UploadError as exc:
            gr.Warning(f"image {which} is not used: {exc}")
            kept.append(None)
            fields.append(None)
            continue
        for note in _upload_notes(which, notes) if which == arrived else []:
            gr.Info(note)
        kept.append(upload)
        fields.append(gr.skip())
    return SwapUpload(*fields, show_pair(ctx, dataset_name, model_a, model_b, class_name, index_a, index_b, *kept,
                                         patch_size, swap_ratio, seed))


def _sliders(dataset: Dataset, label: int, first: int, second: int) -> tuple[gr.Slider, gr.Slider]:
    """The two sample sliders over class ``label``'s test images, at ``first`` and ``second`` (clipped)."""
    top = class_size(dataset, label) - 1
    return gr.Slider(maximum=top, value=min(first, top)), gr.Slider(maximum=top, value=min(second, top))


def pick_class(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, class_name: str,
               upload_a: str | None, upload_b: str | None, patch_size: int, swap_ratio: float,
               seed: float) -> SwapSamples:
    """A new class: samples 0 and 1 of it."""
    dataset = ctx.dataset(dataset_name)
    return SwapSamples(*_sliders(dataset, class_label(dataset, class_name), 0, 1),
                       show_pair(ctx, dataset_name, model_a, model_b, class_name, 0, 1, upload_a, upload_b, patch_size,
                                 swap_ratio, seed))


def random_pair(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, patch_size: int,
                swap_ratio: float, seed: float) -> RandomPair:
    """A random class and two different random samples of it (uploads are cleared)."""
    dataset = ctx.dataset(dataset_name)
    label, rank_a, rank_b, _, _ = random_class_pair(dataset, np.random.default_rng())
    name = dataset.class_names[label]
    return RandomPair(name, *_sliders(dataset, label, rank_a, rank_b), None, None,
                      show_pair(ctx, dataset_name, model_a, model_b, name, rank_a, rank_b, None, None, patch_size,
                                swap_ratio, seed))


def change_dataset(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, swap_ratio: float,
                   seed: float) -> SwapControls:
    """A new dataset: its classes, its patch sizes (the default chosen), its first two samples of the first class."""
    dataset = ctx.dataset(dataset_name)
    size = default_patch_size(dataset.image_size)
    name = dataset.class_names[0]
    return SwapControls(choice_dropdown(list(dataset.class_names), value=name), *_sliders(dataset, 0, 0, 1),
                        integer_dropdown(patch_size_choices(dataset.image_size), value=size), None, None,
                        show_pair(ctx, dataset_name, model_a, model_b, name, 0, 1, None, None, size, swap_ratio, seed))


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
        class_name = choice_dropdown(list(dataset.class_names), value=dataset.class_names[0], label="Class", scale=1,
                                     elem_id="swap-class")
        index_a = gr.Slider(0, count - 1, value=0, step=1, label="Sample a", scale=2, elem_id="swap-index-a",
                            info="counts within the class (0 = its first test image); the summary gives the test #",
                            buttons=[])  # no ↺: Gradio's reset sends no input event, so it would not redraw
        index_b = gr.Slider(0, count - 1, value=1, step=1, label="Sample b", scale=2, elem_id="swap-index-b",
                            info="counts within the class, like sample a", buttons=[])
        random_button = gr.Button("Random pair", scale=1)
    with gr.Row(equal_height=True):
        patch_size = integer_dropdown(patch_size_choices(dataset.image_size),
                                      value=default_patch_size(dataset.image_size), label="Patch size (pixels)",
                                      info="the sizes training accepts: divisors of the image side",
                                      elem_id="swap-patch-size")
        ratio = gr.Slider(0, 1, value=TrainConfig().swap_ratio, step=0.05, label="Swap ratio", buttons=[],
                          info="fraction of patch positions exchanged (training's default)", elem_id="swap-ratio")
        seed = gr.Number(0, precision=0, label="Seed", info="with sample a, fixes which positions are exchanged",
                         elem_id="swap-seed")
    with gr.Accordion("Use your own images (optional)", open=False):
        gr.Markdown("PNG, JPEG, WebP or BMP up to 20 MB. An upload replaces sample a or b, is taken to show the "
                    "chosen class, and is converted to the dataset's channels and size.")
        with gr.Row():
            upload_a = gr.File(label="Image a", file_types=UPLOAD_TYPES, height=110, elem_id="swap-upload-a")
            upload_b = gr.File(label="Image b", file_types=UPLOAD_TYPES, height=110, elem_id="swap-upload-b")
    return _Controls(class_name, index_a, index_b, random_button, patch_size, ratio, seed, upload_a, upload_b)


def _outputs() -> SwapView:
    """The four images with their captions, the summary, the JSON and the pair's state."""
    images, captions = [], []
    with gr.Row(equal_height=True, elem_classes="swap-pictures"):  # first in presentation mode (app.CSS)
        for i, title in enumerate(TITLES):
            with gr.Column(min_width=180):
                images.append(gr.Image(label=title, format="png", interactive=False, height=300,
                                       elem_classes="pixelated", buttons=["download"], elem_id=f"swap-image-{i}"))
                captions.append(gr.Markdown(elem_classes="caption"))
    summary = gr.Markdown(elem_id="swap-summary")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="swap_pair")
    return SwapView(*images, *captions, summary, data, gr.State())


def build(ctx: AppContext, header: Header, demo: gr.Blocks) -> SwapTab:
    """The tab; every control redraws on mouse, keyboard and typed values (``.input``, the last value wins)."""
    gr.Markdown("Two test images of one class exchange the same random patch positions. Each model scores all "
                "four images; of the swapped pair, the view with the higher true-class confidence is the "
                "**teacher** of the other (a tie goes to a′), and the KL term is what IPS training adds to the loss "
                "for this pair.", elem_classes="present-hide")
    c = _controls(ctx.dataset(header.dataset.value))
    view = _outputs()
    outputs = flatten(view)
    models = header.pickers
    inputs = [*models, c.class_name, c.index_a, c.index_b, c.upload_a, c.upload_b, c.patch_size, c.ratio, c.seed]
    work = {**LIGHT_EVENTS, "trigger_mode": "always_last"}
    show = model_handler(ctx, show_pair, small=True)
    # .input fires on dragging, arrow keys and typing (not when a handler sets the value: no double drawing)
    drawn = gr.on([demo.load, c.index_a.input, c.index_b.input, c.patch_size.input, c.ratio.input, c.seed.input,
                   c.upload_a.clear, c.upload_b.clear, *header.models_picked], show, inputs, outputs,
                  api_name="swap_pair", js=typed_values_js(inputs), **work)
    show_drawn_values(drawn, [c.index_a, c.index_b, c.ratio, c.seed])
    restore_refused(drawn, show, {"seed": c.seed})
    for which, upload in (("a", c.upload_a), ("b", c.upload_b)):  # one event each: the new file is announced
        upload.upload(model_handler(ctx, show_upload, which, small=True), inputs,
                      flatten(SwapUpload(c.upload_a, c.upload_b, view)),
                      api_name="swap_upload" if which == "a" else "swap_upload_b", js=typed_values_js(inputs), **work)
    c.class_name.input(model_handler(ctx, pick_class, small=True),
                       [*models, c.class_name, c.upload_a, c.upload_b, c.patch_size, c.ratio, c.seed],
                       flatten(SwapSamples(c.index_a, c.index_b, view)), api_name="swap_class", **work)
    c.random_button.click(model_handler(ctx, random_pair, small=True), [*models, c.patch_size, c.ratio, c.seed],
                          flatten(RandomPair(c.class_name, c.index_a, c.index_b, c.upload_a, c.upload_b, view)),
                          api_name="random_pair", **work)
    header.switched.then(model_handler(ctx, change_dataset, small=True), [*models, c.ratio, c.seed],
                         flatten(SwapControls(c.class_name, c.index_a, c.index_b, c.patch_size, c.upload_a,
                                              c.upload_b, view)), api_name="swap_dataset", **work)
    evidence.build_swap_section(ctx, header, view.pair)
    return SwapTab(c.class_name, c.index_a, c.index_b, c.patch_size, c.ratio, c.seed, c.upload_a, c.upload_b,
                   view.pair, inputs, outputs, show)
