"""Tab 4, Compare: model A against model B over the whole test split."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
import pandas as pd

from explorer.analysis.comparison import compare_reports, model_report, split_logits
from explorer.analysis.figures import confidence_histograms, confusion_figure, reliability_diagram
from explorer.analysis.render import display_scale, render_image
from explorer.ui.common import MODEL_WORK, AppContext, Header, model_work
from explorer.ui.gradcam import SOURCES, GradCamTab

__all__ = ["GALLERY_SIZE", "build"]

GALLERY_SIZE = 30  # flipped samples shown per gallery; the JSON lists them all
METRICS = (("accuracy", "accuracy (%)", 100), ("nll", "NLL", 1), ("ece", "ECE (%, 15 bins)", 100),
           ("brier", "Brier score", 1), ("true_class_confidence", "mean true-class confidence", 1))


def _finite(values: list[float]) -> list[float | None]:
    """JSON has no NaN: an empty reliability bin's accuracy and confidence become null."""
    return [None if math.isnan(v) else v for v in values]


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
    with gr.Row():
        fixed = gr.Gallery(label="A wrong → B right (true class · A's prediction · B's prediction)", columns=4,
                           height=380, object_fit="contain", allow_preview=False, elem_id="compare-fixed")
        broken = gr.Gallery(label="A right → B wrong (true class · A's prediction · B's prediction)", columns=4,
                            height=380, object_fit="contain", allow_preview=False, elem_id="compare-broken")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="compare")
    flips = gr.State()  # test indices behind each gallery, for opening one in the Grad-CAM tab

    @model_work(ctx)
    def compare(dataset_name: str, model_a: str | None, model_b: str | None,
                progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        dataset = ctx.dataset(dataset_name)
        checkpoints = ctx.models(dataset, model_a, model_b)
        if len(checkpoints) != 2:
            raise ValueError("choose two checkpoints, model A and model B, to compare")
        name_a, name_b = checkpoints
        labels = dataset.test_labels
        reports = {}
        for i, (name, checkpoint) in enumerate(checkpoints.items()):
            progress(0.1 + 0.4 * i, desc=f"{name}: predicting {len(labels)} test images")
            reports[name] = model_report(split_logits(checkpoint, dataset), labels, dataset.num_classes)
        progress(0.9, desc="drawing")
        result = compare_reports(reports[name_a], reports[name_b])
        table = pd.DataFrame({
            "metric": [title for _, title, _ in METRICS],
            name_a: [round(scale * reports[name_a].metrics[key], 4) for key, _, scale in METRICS],
            name_b: [round(scale * reports[name_b].metrics[key], 4) for key, _, scale in METRICS],
            "B − A": [round(scale * (reports[name_b].metrics[key] - reports[name_a].metrics[key]), 4)
                      for key, _, scale in METRICS]})

        def gallery(indices) -> list[tuple[Any, str]]:
            items = []
            for i in indices[:GALLERY_SIZE].tolist():
                truth = dataset.class_names[int(labels[i])]
                a, b = (dataset.class_names[int(r.predicted[i])] for r in (result.a, result.b))
                items.append((render_image(dataset.test_images[i], scale=display_scale(*dataset.image_size, side=112)),
                              f"{truth} · A {a} · B {b}"))
            return items

        data_out = {
            "dataset": dataset.name, "n": len(labels),
            "models": {name: {"checkpoint": str(checkpoints[name].path), **r.metrics,
                              "reliability": {"edges": r.bins.edges, "count": r.bins.count,
                                              "accuracy": _finite(r.bins.accuracy),
                                              "confidence": _finite(r.bins.confidence)},
                              "confusion": r.confusion.tolist()}
                       for name, r in reports.items()},
            "confusion_difference": result.confusion_difference.tolist(),
            "a_wrong_b_right": result.fixed.tolist(), "a_right_b_wrong": result.broken.tolist(),
        }
        text = (f"**{len(labels)} test images** of {dataset.name}. B fixes **{len(result.fixed)}** of A's mistakes "
                f"and breaks **{len(result.broken)}** of A's correct predictions (net "
                f"{len(result.fixed) - len(result.broken):+d}).")
        return (text, table, reliability_diagram({n: r.bins for n, r in reports.items()}),
                confidence_histograms({n: r.confidence for n, r in reports.items()},
                                      {n: r.correct for n, r in reports.items()}),
                confusion_figure({n: r.confusion for n, r in reports.items()}, result.confusion_difference,
                                 dataset.class_names),
                gallery(result.fixed), gallery(result.broken), data_out,
                {"fixed": result.fixed[:GALLERY_SIZE].tolist(), "broken": result.broken[:GALLERY_SIZE].tolist()})

    run.click(compare, [header.dataset, header.model_a, header.model_b],
              [summary, metrics, reliability, confidence, confusion, fixed, broken, data, flips], api_name="compare",
              concurrency_id=MODEL_WORK, concurrency_limit=1)

    def opener(which: str):
        def open_sample(shown: dict[str, list[int]] | None, evt: gr.SelectData):
            if not shown or not isinstance(evt.index, int) or evt.index >= len(shown[which]):
                raise gr.Error("compare the models first, then click a sample", print_exception=False)
            return SOURCES[0], shown[which][evt.index], gr.Tabs(selected="gradcam")
        return open_sample

    for gallery_component, which in ((fixed, "fixed"), (broken, "broken")):
        gallery_component.select(opener(which), flips, [gradcam.source, gradcam.test_index, tabs],
                                 api_name=f"open_{which}_sample").success(
            gradcam.show, gradcam.inputs, gradcam.outputs, api_name=f"gradcam_{which}_sample",
            concurrency_id=MODEL_WORK, concurrency_limit=1)
