"""Tab 4, Compare: model A against model B over the whole test split."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
from torch import Tensor

from explorer.analysis.claims import Claim, claims_heading, claims_markdown, compare_claims
from explorer.analysis.comparison import Comparison, ModelReport, compare_reports, model_report
from explorer.analysis.figures import confidence_histograms, confusion_figure, reliability_diagram
from explorer.analysis.payloads import compare_payload, compare_table
from explorer.analysis.render import display_scale, render_image
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.ui.binding import analysis_handler, flatten, handler
from explorer.ui.context import ANALYSIS_EVENTS, AppContext
from explorer.ui.gradcam import SOURCES, GradCamTab
from explorer.ui.header import Header

__all__ = ["TAB_ID", "GALLERY_SIZE", "CompareRefresh", "CompareView", "OpenedSample", "build", "compare_models",
           "model_claims", "open_sample", "refresh_compare", "refresh_open_compare", "split_reports"]

TAB_ID = "compare"
GALLERY_SIZE = 30  # flipped samples shown per gallery; the JSON lists them all
GALLERIES = ("fixed", "broken")  # A wrong → B right, A right → B wrong


class CompareView(NamedTuple):
    """One answer of ``compare_models`` (or its components)."""

    summary: Any  # the sentences (Markdown)
    metrics: Any  # the metrics table
    reliability: Any
    confidence: Any
    confusion: Any
    fixed: Any  # gallery: A wrong → B right
    broken: Any  # gallery: A right → B wrong
    data: Any  # the JSON of /compare
    flips: Any  # the test indices behind the galleries


class CompareRefresh(NamedTuple):
    """One answer of ``refresh_compare`` (or its components): the comparison and the dataset and models it shows."""

    view: CompareView
    shown: Any


class OpenedSample(NamedTuple):
    """One answer of ``open_sample`` (or its components): the Grad-CAM tab's source and test index, the tabs."""

    source: Any
    test_index: Any
    tabs: Any


def _gallery(dataset: Dataset, comparison: Comparison, indices: Tensor) -> list[tuple[Any, str]]:
    """The first ``GALLERY_SIZE`` of ``indices`` as (picture, "true class · A's prediction · B's prediction")."""
    items = []
    for i in indices[:GALLERY_SIZE].tolist():
        truth = dataset.class_names[int(dataset.test_labels[i])]
        a, b = (dataset.class_names[int(r.predicted[i])] for r in (comparison.a, comparison.b))
        items.append((render_image(dataset.test_images[i], scale=display_scale(*dataset.image_size, side=112)),
                      f"{truth} · A {a} · B {b}"))
    return items


def split_reports(ctx: AppContext, dataset: Dataset, checkpoints: dict[str, Checkpoint],
                 progress: gr.Progress | None = None) -> dict[str, ModelReport]:
    """Each model's report over the test split from the context's cached logits: the Compare tab's and the Guide's."""
    reports = {}
    for i, (name, checkpoint) in enumerate(checkpoints.items()):
        if progress is not None:
            progress(0.1 + 0.4 * i, desc=f"{name}: predicting {len(dataset.test_labels)} test images")
        reports[name] = model_report(ctx.split_logits(checkpoint, dataset), dataset.test_labels, dataset.num_classes)
    return reports


def model_claims(dataset: Dataset, reports: dict[str, ModelReport]) -> list[Claim]:
    """The generated sentences about model B against model A on the test split (``claims.compare_claims``)."""
    (name_a, a), (name_b, b) = reports.items()
    return compare_claims(name_a, name_b, a, b, dataset.test_labels)


def _methods(checkpoints: dict[str, Checkpoint]) -> list[str]:
    return [str(c.card.get("method", "?")) for c in checkpoints.values()]


def compare_models(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
                   progress=gr.Progress()) -> CompareView:  # noqa: B008 (Gradio injects it)
    """Summary (with the generated claims), metrics table, reliability, confidence and confusion figures, both
    galleries, the JSON (/compare) and the test indices behind the galleries."""
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a, model_b)
    if len(checkpoints) != 2:  # e.g. a dataset with one checkpoint so far: say what to do, no error
        return CompareView(f"Choose two checkpoints trained on {dataset.name}, model A and model B, to compare them.",
                           pd.DataFrame(), None, None, None, [], [], {}, None)
    reports = split_reports(ctx, dataset, checkpoints, progress)
    progress(0.9, desc="drawing")
    comparison = compare_reports(*reports.values())
    claims = model_claims(dataset, reports)
    text = claims_markdown(claims_heading(*_methods(checkpoints), dataset.name), claims)
    return CompareView(
        text, pd.DataFrame(compare_table(reports)), reliability_diagram({n: r.bins for n, r in reports.items()}),
        confidence_histograms({n: r.confidence for n, r in reports.items()},
                              {n: r.correct for n, r in reports.items()}),
        confusion_figure({n: r.confusion for n, r in reports.items()}, comparison.confusion_difference,
                         dataset.class_names),
        _gallery(dataset, comparison, comparison.fixed), _gallery(dataset, comparison, comparison.broken),
        compare_payload(dataset, reports, comparison, checkpoints, claims),
        {"fixed": comparison.fixed[:GALLERY_SIZE].tolist(), "broken": comparison.broken[:GALLERY_SIZE].tolist()})


# compare_models's outputs and the shown models, left as they are
UNCHANGED = CompareRefresh(CompareView(*[gr.skip()] * len(CompareView._fields)), gr.skip())


def refresh_compare(ctx: AppContext, shown: list | None, dataset_name: str, model_a: str | None,
                    model_b: str | None) -> CompareRefresh:
    """The tab opened: ``compare_models`` unless what is shown is of these dataset and models already."""
    if shown == [dataset_name, model_a, model_b]:
        return UNCHANGED
    return CompareRefresh(compare_models(ctx, dataset_name, model_a, model_b), [dataset_name, model_a, model_b])


def refresh_open_compare(ctx: AppContext, tab_id: str, active: str | None, shown: list | None, dataset_name: str,
                         model_a: str | None, model_b: str | None) -> CompareRefresh:
    """The header changed: ``refresh_compare`` when this tab is the open one, else nothing (it computes on opening)."""
    if active != tab_id:
        return UNCHANGED
    return refresh_compare(ctx, shown, dataset_name, model_a, model_b)


def open_sample(which: str, gradcam_tab_id: str, shown: dict[str, list[int]] | None,
                evt: gr.SelectData) -> OpenedSample:
    """A clicked gallery sample -> the Grad-CAM tab on that test image."""  # which: "fixed" or "broken"
    if not shown or not isinstance(evt.index, int) or evt.index >= len(shown[which]):
        raise ValueError("compare the models first, then click a sample")
    return OpenedSample(SOURCES[0], gr.Slider(value=shown[which][evt.index], interactive=True),
                        gr.Tabs(selected=gradcam_tab_id))


def build(ctx: AppContext, header: Header, gradcam: GradCamTab, tabs: gr.Tabs, tab: gr.Tab, active: gr.State) -> None:
    """The tab; it compares when opened, and again when the header changes while it is open."""
    gr.Markdown("Both models over the whole test split. Logits are computed once per checkpoint and kept, so "
                "comparing again is instant. **Click a sample** in a gallery to see both models' Grad-CAM of it.")
    run = gr.Button("Compare model A and model B", variant="primary")
    with gr.Row():
        with gr.Column():
            summary = gr.Markdown("Open this tab to compare the models.", elem_id="compare-summary")
            metrics = gr.Dataframe(label="metrics on the test split", interactive=False, elem_id="compare-metrics")
        reliability = gr.Plot(label="reliability diagram", show_label=False)
    confidence = gr.Plot(label="confidence histograms", show_label=False)
    confusion = gr.Plot(label="confusion matrices", show_label=False)
    with gr.Row():  # PNG: pixels stay exact, and encoding is faster than WebP (a cached Compare answers sooner)
        galleries = [gr.Gallery(label=f"{title} (true class · A's prediction · B's prediction)", columns=4,
                                height=380, object_fit="contain", allow_preview=False, elem_id=f"compare-{which}",
                                format="png")
                     for which, title in zip(GALLERIES, ("A wrong → B right", "A right → B wrong"), strict=True)]
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="compare")
    flips = gr.State()  # test indices behind each gallery, for opening one in the Grad-CAM tab
    shown = gr.State()  # the dataset and models behind what is shown: opening the tab recomputes when they changed

    work = {**ANALYSIS_EVENTS, "trigger_mode": "always_last"}  # answers cached by inputs and checkpoints
    view = CompareView(summary, metrics, reliability, confidence, confusion, *galleries, data, flips)
    refreshed = flatten(CompareRefresh(view, shown))
    run.click(analysis_handler(ctx, compare_models), header.pickers, flatten(view), api_name="compare",
              **ANALYSIS_EVENTS)
    tab.select(analysis_handler(ctx, refresh_compare), [shown, *header.pickers], refreshed,
               api_name="compare_opened", **work)
    refresh_open = analysis_handler(ctx, refresh_open_compare, TAB_ID)
    gr.on(header.models_picked, refresh_open, [active, shown, *header.pickers], refreshed,
          api_name="compare_models_picked", **work)
    header.switched.then(refresh_open, [active, shown, *header.pickers], refreshed,
                         api_name="compare_after_dataset", **work)
    opened = flatten(OpenedSample(gradcam.source, gradcam.test_index, tabs))
    for gallery, which in zip(galleries, GALLERIES, strict=True):
        gallery.select(handler(open_sample, which, gradcam.tab_id), flips, opened,
                       api_name=f"open_{which}_sample").success(
            gradcam.show, gradcam.inputs, gradcam.outputs, api_name=f"gradcam_{which}_sample", **work)
