"""Tab 2, Confidence gaps: many swapped test pairs, how far apart their views' confidences are, who teaches."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from explorer.analysis.claims import claims_markdown, gap_claims
from explorer.analysis.figures import class_gap_bars, gap_histogram, gap_scatter
from explorer.analysis.inputs import class_label, class_size, patch_size_choices, seed_number, whole_number
from explorer.analysis.pairs import GapStatistics, PairGaps, confidence_gaps, gap_statistics
from explorer.analysis.payloads import GAP_TABLE_ROWS, gap_table, gaps_payload
from explorer.data import Dataset
from explorer.ips import build_class_index, default_patch_size, swap_count
from explorer.training.config import TrainConfig
from explorer.ui import evidence
from explorer.ui.binding import analysis_handler, flatten, handler, restore_refused
from explorer.ui.components import choice_dropdown, integer_dropdown, show_drawn_values
from explorer.ui.context import ANALYSIS_EVENTS, AppContext
from explorer.ui.header import Header
from explorer.ui.swap import SwapTab, typed_values_js, unswapped_views

__all__ = ["TAB_ID", "ALL_CLASSES", "MODEL_SETS", "GapsControls", "GapsRefresh", "GapsView", "OpenedPair", "build",
           "change_dataset", "compute_gaps", "open_pair", "refresh_gaps", "refresh_open_gaps"]

TAB_ID = "gaps"
ALL_CLASSES = "all classes"
MODEL_SETS = ("A and B", "A only", "B only")


class GapsView(NamedTuple):
    """One answer of ``compute_gaps`` (or its components): the plots, the largest-gap table, the summary, the JSON
    and the settings of the shown pairs (what a click on a table row opens in the Patch swap tab)."""

    histogram: Any
    class_bars: Any
    scatter: Any
    table: Any
    summary: Any
    data: Any  # the JSON of /confidence_gaps
    settings: Any  # a state: dataset, patch size, ratio and seed of the shown pairs


class GapsRefresh(NamedTuple):
    """One answer of ``refresh_gaps`` (or its components): the view and the control values it was computed from."""

    view: GapsView
    shown: Any  # a state: ``shown`` of the next call


class GapsControls(NamedTuple):
    """The controls a dataset switch resets (``change_dataset``, or their components)."""

    class_filter: Any
    n_pairs: Any
    patch_size: Any


class OpenedPair(NamedTuple):
    """One answer of ``open_pair``: the Patch swap tab's controls set to a table row's pair, and the tab selected."""

    class_name: Any
    index_a: Any
    index_b: Any
    patch_size: Any
    ratio: Any
    seed: Any
    upload_a: Any
    upload_b: Any
    tabs: Any


def _summary(gaps: PairGaps, stats: dict[str, GapStatistics], dataset: Dataset, patch_size: int, swap_ratio: float,
             seed: int) -> str:
    """The settings, each model's mean gap and KL term, then the generated claims (who teaches; whose views agree).

    At a ratio and patch size that exchange no position (or every one) it says so: the views are then the
    originals, not mixed views."""
    cells = (dataset.image_size[0] // patch_size) * (dataset.image_size[1] // patch_size)
    unswapped = unswapped_views(swap_count(swap_ratio, cells), cells)
    views = (f"**{swap_count(swap_ratio, cells)} of {cells} patch positions exchanged: {unswapped}** in every pair."
             if unswapped else "a′ and b′ are the swapped views of each pair (a′ = test # a with b's patches).")
    text = [f"**{len(gaps.anchors)} pairs**, {patch_size}-pixel patches, ratio {swap_ratio:g}, seed {seed}. {views}"]
    text += [f"- **{name}**: mean gap **{s.mean:.3f}** (median {s.median:.3f}); mean KL term "
             f"{float(gaps.kd[name].mean()):.4f}" for name, s in stats.items()]
    return "\n".join(text) + "\n\n" + claims_markdown("Who teaches, from these pairs:", gap_claims(stats, len(
        gaps.anchors)))


def _hover(dataset: Dataset, gaps: PairGaps) -> list[str]:
    """The scatter's hover text of each pair: its class and test indices."""
    return [f"class {dataset.class_names[int(c)]}: test #{int(a)} × #{int(b)}"
            for a, b, c in zip(gaps.anchors, gaps.partners, gaps.labels, strict=True)]


def compute_gaps(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, models: str,
                 class_name: str, n_pairs: float, patch_size: int, swap_ratio: float, seed: float,
                 progress=gr.Progress()) -> GapsView:  # noqa: B008 (Gradio injects it)
    """N pairs scored: histogram, class bars, scatter, the largest-gap table, the summary, the JSON
    (/confidence_gaps) and the settings that a click on a table row opens in the Patch swap tab."""
    if models not in MODEL_SETS:
        raise ValueError(f"models must be one of {MODEL_SETS}; got {models!r}")
    seed_int, size, n = seed_number(seed), whole_number(patch_size, "patch size"), whole_number(n_pairs, "N")
    ratio = float(swap_ratio)
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a if models != "B only" else None, model_b if models != "A only" else None)
    if not checkpoints:  # a dataset without checkpoints yet: say what to do, no error
        wanted = models.replace(" only", "")
        return GapsView(None, None, None, pd.DataFrame(), f"No model to score the pairs with: choose model {wanted} "
                        f"above (checkpoints trained on {dataset.name}).", {}, None)
    label = None if class_name == ALL_CLASSES else class_label(dataset, class_name)
    progress(0.2, desc="swapping pairs and scoring them")
    gaps = confidence_gaps(dataset, {name: c.model for name, c in checkpoints.items()}, n, size, ratio,
                           seed_int, label)
    progress(0.8, desc="drawing")
    stats = {name: gap_statistics(gaps.gap(name), gaps.labels, gaps.teacher_is_a[name], dataset.num_classes)
             for name in checkpoints}
    return GapsView(gap_histogram({name: gaps.gap(name) for name in checkpoints}),
                    class_gap_bars(dataset.class_names, {name: s.class_mean for name, s in stats.items()}),
                    gap_scatter(gaps.confidence_a, gaps.confidence_b, gaps.teacher_is_a, _hover(dataset, gaps)),
                    pd.DataFrame(gap_table(dataset, gaps)), _summary(gaps, stats, dataset, size, ratio, seed_int),
                    gaps_payload(dataset, gaps, stats, class_name, size, ratio, seed_int, checkpoints),
                    {"dataset": dataset.name, "patch_size": size, "ratio": ratio, "seed": seed_int})


UNCHANGED = GapsRefresh(GapsView(*[gr.skip()] * len(GapsView._fields)), gr.skip())  # all left as they are


def refresh_gaps(ctx: AppContext, shown: list | None, dataset_name: str, model_a: str | None, model_b: str | None,
                 models: str, class_name: str, n_pairs: float, patch_size: int, swap_ratio: float,
                 seed: float) -> GapsRefresh:
    """The controls or the tab's opening: ``compute_gaps``, unless what is shown was computed from these values."""
    settings = [dataset_name, model_a, model_b, models, class_name, n_pairs, patch_size, swap_ratio, seed]
    if shown == settings:
        return UNCHANGED
    return GapsRefresh(compute_gaps(ctx, *settings), settings)


def refresh_open_gaps(ctx: AppContext, tab_id: str, active: str | None, shown: list | None, dataset_name: str,
                      model_a: str | None, model_b: str | None, models: str, class_name: str, n_pairs: float,
                      patch_size: int, swap_ratio: float, seed: float) -> GapsRefresh:
    """The header changed: ``refresh_gaps`` when this tab is the open one, else nothing (it computes on opening)."""
    if active != tab_id:
        return UNCHANGED
    return refresh_gaps(ctx, shown, dataset_name, model_a, model_b, models, class_name, n_pairs, patch_size,
                        swap_ratio, seed)


def change_dataset(ctx: AppContext, dataset_name: str) -> GapsControls:
    """A new dataset: its classes, its number of test pairs, its patch sizes (the default chosen)."""
    dataset = ctx.dataset(dataset_name)
    n = len(dataset.test_labels)
    return GapsControls(choice_dropdown([ALL_CLASSES, *dataset.class_names], value=ALL_CLASSES),
                        gr.Slider(maximum=n, value=min(500, n)),
                        integer_dropdown(patch_size_choices(dataset.image_size),
                                         value=default_patch_size(dataset.image_size)))


def open_pair(ctx: AppContext, swap_tab_id: str, settings: dict[str, Any] | None, evt: gr.SelectData) -> OpenedPair:
    """A clicked table row -> its pair, patch size, ratio and seed in the Patch swap tab (uploads cleared)."""
    if not settings or evt.row_value is None:
        raise ValueError("compute the gaps first, then click a row of the table")
    class_value, anchor, partner = evt.row_value[:3]  # the table's first three columns
    dataset = ctx.dataset(settings["dataset"])
    index = build_class_index(dataset.test_labels, dataset.num_classes)
    label = class_label(dataset, str(class_value))
    top = class_size(dataset, label) - 1
    return OpenedPair(dataset.class_names[label], gr.Slider(maximum=top, value=int(index.rank[int(anchor)])),
                      gr.Slider(maximum=top, value=int(index.rank[int(partner)])), settings["patch_size"],
                      settings["ratio"], settings["seed"], None, None, gr.Tabs(selected=swap_tab_id))


def _plots() -> tuple[gr.Plot, gr.Plot, gr.Plot]:
    """Histogram, class bars, scatter."""
    with gr.Row():
        histogram = gr.Plot(label="gap histogram", show_label=False)
        class_bars = gr.Plot(label="mean gap per class", show_label=False)
    return histogram, class_bars, gr.Plot(label="conf a′ vs conf b′", show_label=False)


def build(ctx: AppContext, header: Header, swap: SwapTab, tabs: gr.Tabs, tab: gr.Tab, active: gr.State) -> None:
    """The tab; it computes when opened (and when the header changes while it is open), and on every control."""
    dataset0 = ctx.dataset(header.dataset.value)
    n_test = len(dataset0.test_labels)
    gr.Markdown("N random same-class pairs of the test split are patch-swapped as in IPS training. A large gap "
                "|conf a′ − conf b′| means one swapped view clearly teaches the other; equal confidences are a "
                "**tie** (a′ teaches by the rule). The seed fixes every pair: the same seed shows a class the same "
                "pairs again, whatever N. **Click a table row** to open that pair in the Patch swap tab.")
    with gr.Row(equal_height=True):
        which = gr.Radio(list(MODEL_SETS), value="A and B", label="Models")
        class_filter = choice_dropdown([ALL_CLASSES, *dataset0.class_names], value=ALL_CLASSES, label="Pairs of")
        n_pairs = gr.Slider(10, n_test, value=min(500, n_test), step=10, label="Number of pairs N", buttons=[],
                            info="up to the whole test split", elem_id="gaps-n-pairs")  # no ↺: it would not redraw
    with gr.Row(equal_height=True):
        patch_size = integer_dropdown(patch_size_choices(dataset0.image_size),
                                       value=default_patch_size(dataset0.image_size), label="Patch size (pixels)",
                                       elem_id="gaps-patch-size")
        ratio = gr.Slider(0, 1, value=TrainConfig().swap_ratio, step=0.05, label="Swap ratio", elem_id="gaps-ratio",
                          buttons=[])
        seed = gr.Number(0, precision=0, label="Seed", elem_id="gaps-seed")
        run = gr.Button("Compute gaps", variant="primary")
    summary = gr.Markdown("Open this tab to score the pairs.", elem_id="gaps-summary")
    plots = _plots()
    table = gr.Dataframe(label=f"The {GAP_TABLE_ROWS} pairs with the largest gaps (test # = index in the whole test "
                               "split; the Patch swap sliders count within a class). Click a row to open it.",
                         interactive=False, wrap=True, elem_id="gaps-table")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="confidence_gaps")
    run_state = gr.State()  # the settings of the shown pairs, for opening one in the Patch swap tab
    shown = gr.State()  # the controls' values behind what is shown: opening the tab recomputes only when they changed
    evidence.build_gaps_section(ctx, header, [which, class_filter, n_pairs, patch_size, ratio, seed], MODEL_SETS,
                                ALL_CLASSES)

    work = {**ANALYSIS_EVENTS, "trigger_mode": "always_last"}  # answers cached by inputs and checkpoints
    settings = [*header.pickers, which, class_filter, n_pairs, patch_size, ratio, seed]
    view = GapsView(*plots, table, summary, data, run_state)
    refreshed = flatten(GapsRefresh(view, shown))
    run.click(analysis_handler(ctx, compute_gaps), settings, flatten(view), api_name="confidence_gaps",
              js=typed_values_js(settings), **ANALYSIS_EVENTS)
    redraw = analysis_handler(ctx, refresh_gaps)
    drawn = gr.on([which.input, class_filter.input, n_pairs.input, patch_size.input, ratio.input, seed.input], redraw,
                  [shown, *settings], refreshed, api_name="gaps_controls", js=typed_values_js([shown, *settings]),
                  **work)
    show_drawn_values(drawn, [n_pairs, ratio, seed])
    restore_refused(drawn, redraw, {"seed": seed})
    tab.select(redraw, [shown, *settings], refreshed, api_name="gaps_opened", **work)  # one handler: one memory
    refresh_open = analysis_handler(ctx, refresh_open_gaps, TAB_ID)
    gr.on(header.models_picked, refresh_open, [active, shown, *settings], refreshed, api_name="gaps_models", **work)
    header.switched.then(handler(change_dataset, ctx), header.dataset,
                         flatten(GapsControls(class_filter, n_pairs, patch_size)),
                         api_name="gaps_dataset").then(refresh_open, [active, shown, *settings], refreshed,
                                                       api_name="gaps_after_dataset", **work)
    table.select(handler(open_pair, ctx, swap.tab_id), run_state,
                 flatten(OpenedPair(swap.class_name, swap.index_a, swap.index_b, swap.patch_size, swap.ratio,
                                    swap.seed, swap.upload_a, swap.upload_b, tabs)), api_name="open_gap_pair").success(
        swap.show, swap.inputs, swap.outputs, api_name="swap_opened_pair", **work)
