"""Tab 4, Compare: model A against model B over the whole test split."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
from torch import Tensor

from explorer.analysis.comparison import Comparison, compare_reports, model_report
from explorer.analysis.figures import confidence_histograms, confusion_figure, reliability_diagram
from explorer.analysis.payloads import compare_payload, compare_table
from explorer.analysis.render import display_scale, render_image
from explorer.data import Dataset
from explorer.ui.common import ANALYSIS_EVENTS, LIGHT_EVENTS, AppContext, Header, analysis_handler, handler
from explorer.ui.gradcam import SOURCES, GradCamTab

__all__ = ["TAB_ID", "GALLERY_SIZE", "build", "compare_models", "open_sample"]

TAB_ID = "compare"
GALLERY_SIZE = 30  # flipped samples shown per gallery; the JSON lists them all
GALLERIES = ("fixed", "broken")  # A wrong → B right, A right → B wrong


def _gallery(dataset: Dataset, comparison: Comparison, indices: Tensor) -> list[tuple[Any, str]]:
    """The first ``GALLERY_SIZE`` of ``indices`` as (picture, "true class · A's prediction · B's prediction")."""
    items = []
    for i in indices[:GALLERY_SIZE].tolist():
        truth = dataset.class_names[int(dataset.test_labels[i])]
        a, b = (dataset.class_names[int(r.predicted[i])] for r in (comparison.a, comparison.b))
        items.append((render_image(dataset.test_images[i], scale=display_scale(*dataset.image_size, side=112)),
                      f"{truth} · A {a} · B {b}"))
    return items


def compare_models(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
                   progress=gr.Progress()) -> tuple:  # noqa: B008 (Gradio injects it)
    """Summary, metrics table, reliability, confidence and confusion figures, both galleries, the JSON (/compare)
    and the test indices behind the galleries."""
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a, model_b)
    if len(checkpoints) != 2:
        raise ValueError("choose two checkpoints, model A and model B, to compare")
    labels = dataset.test_labels
    reports = {}
    for i, (name, checkpoint) in enumerate(checkpoints.items()):
        progress(0.1 + 0.4 * i, desc=f"{name}: predicting {len(labels)} test images")
        reports[name] = model_report(ctx.split_logits(checkpoint, dataset), labels, dataset.num_classes)
    progress(0.9, desc="drawing")
    comparison = compare_reports(*reports.values())
    text = (f"**{len(labels)} test images** of {dataset.name}. B fixes **{len(comparison.fixed)}** of A's mistakes "
            f"and breaks **{len(comparison.broken)}** of A's correct predictions (net "
            f"{len(comparison.fixed) - len(comparison.broken):+d}).")
    return (text, pd.DataFrame(compare_table(reports)), reliability_diagram({n: r.bins for n, r in reports.items()}),
            confidence_histograms({n: r.confidence for n, r in reports.items()},
                                  {n: r.correct for n, r in reports.items()}),
            confusion_figure({n: r.confusion for n, r in reports.items()}, comparison.confusion_difference,
                             dataset.class_names),
            _gallery(dataset, comparison, comparison.fixed), _gallery(dataset, comparison, comparison.broken),
            compare_payload(dataset, reports, comparison, checkpoints),
            {"fixed": comparison.fixed[:GALLERY_SIZE].tolist(), "broken": comparison.broken[:GALLERY_SIZE].tolist()})


def open_sample(which: str, gradcam_tab_id: str, shown: dict[str, list[int]] | None, evt: gr.SelectData) -> tuple:
    """A clicked gallery sample -> the Grad-CAM tab on that test image."""  # which: "fixed" or "broken"
    if not shown or not isinstance(evt.index, int) or evt.index >= len(shown[which]):
        raise ValueError("compare the models first, then click a sample")
    return SOURCES[0], shown[which][evt.index], gr.Tabs(selected=gradcam_tab_id)


def build(ctx: AppContext, header: Header, gradcam: GradCamTab, tabs: gr.Tabs) -> None:
    gr.Markdown("Both models over the whole test split. Logits are computed once per checkpoint and kept, so "
                "comparing again is instant. **Click a sample** in a gallery to see both models' Grad-CAM of it.")
    run = gr.Button("Compare model A and model B", variant="primary")
    with gr.Row():
        with gr.Column():
            summary = gr.Markdown(elem_id="compare-summary")
            metrics = gr.Dataframe(label="metrics on the test split", interactive=False)
        reliability = gr.Plot(label="reliability diagram", show_label=False)
    confidence = gr.Plot(label="confidence histograms", show_label=False)
    confusion = gr.Plot(label="confusion matrices", show_label=False)
    with gr.Row():  # PNG: pixels stay exact, and encoding is 4x faster than WebP (a cached Compare answers sooner)
        galleries = [gr.Gallery(label=f"{title} (true class · A's prediction · B's prediction)", columns=4,
                                height=380, object_fit="contain", allow_preview=False, elem_id=f"compare-{which}",
                                format="png")
                     for which, title in zip(GALLERIES, ("A wrong → B right", "A right → B wrong"), strict=True)]
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="compare")
    flips = gr.State()  # test indices behind each gallery, for opening one in the Grad-CAM tab

    work = LIGHT_EVENTS
    run.click(analysis_handler(ctx, compare_models), [header.dataset, header.model_a, header.model_b],
              [summary, metrics, reliability, confidence, confusion, *galleries, data, flips], api_name="compare",
              **ANALYSIS_EVENTS)
    for gallery, which in zip(galleries, GALLERIES, strict=True):
        gallery.select(handler(open_sample, which, gradcam.tab_id), flips, [gradcam.source, gradcam.test_index, tabs],
                       api_name=f"open_{which}_sample").success(
            gradcam.show, gradcam.inputs, gradcam.outputs, api_name=f"gradcam_{which}_sample", **work)
