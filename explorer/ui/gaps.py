"""Tab 2, Confidence gaps: many swapped test pairs, how far apart their views' confidences are, who teaches."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import torch

from explorer.analysis.figures import class_gap_bars, gap_histogram, gap_scatter
from explorer.analysis.pairs import confidence_gaps, gap_statistics, patch_sizes
from explorer.ips import build_class_index, default_patch_size
from explorer.ui.common import MODEL_WORK, AppContext, Header, model_work
from explorer.ui.swap import SwapTab, class_label, class_size

__all__ = ["ALL_CLASSES", "MODEL_SETS", "build"]

ALL_CLASSES = "all classes"
MODEL_SETS = ("A and B", "A only", "B only")
TABLE_ROWS = 20


def _round(values: torch.Tensor, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def build(ctx: AppContext, header: Header, swap: SwapTab, tabs: gr.Tabs) -> None:
    dataset0 = ctx.dataset("mnist5k")
    n_test = len(dataset0.test_labels)
    gr.Markdown("N random same-class pairs of the test split are patch-swapped as in IPS training. A large gap "
                "|conf a − conf b| means one view clearly teaches the other. The seed fixes every pair: the same "
                "seed shows a class the same pairs again, whatever N. **Click a table row** to open that pair "
                "in the Patch swap tab.")
    with gr.Row(equal_height=True):
        which = gr.Radio(list(MODEL_SETS), value="A and B", label="Models")
        class_filter = gr.Dropdown([ALL_CLASSES, *dataset0.class_names], value=ALL_CLASSES, label="Pairs of")
        n_pairs = gr.Slider(10, n_test, value=min(500, n_test), step=10, label="Number of pairs N",
                            info="up to the whole test split")
    with gr.Row(equal_height=True):
        patch_size = gr.Dropdown(patch_sizes(dataset0.image_size), value=default_patch_size(dataset0.image_size),
                                 label="Patch size (pixels)")
        ratio = gr.Slider(0, 1, value=0.5, step=0.05, label="Swap ratio")
        seed = gr.Number(0, precision=0, label="Seed")
        run = gr.Button("Compute gaps", variant="primary")
    summary = gr.Markdown(elem_id="gaps-summary")
    with gr.Row():
        histogram = gr.Plot(label="gap histogram", show_label=False)
        class_bars = gr.Plot(label="mean gap per class", show_label=False)
    scatter = gr.Plot(label="conf a vs conf b", show_label=False)
    table = gr.Dataframe(label=f"The {TABLE_ROWS} pairs with the largest gaps (click a row to open it)",
                         interactive=False, wrap=True, elem_id="gaps-table")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="confidence_gaps")
    run_state = gr.State()  # the settings of the shown pairs, for opening one in the Patch swap tab

    @model_work(ctx)
    def compute(dataset_name: str, model_a: str | None, model_b: str | None, models: str, class_name: str,
                n_pairs: float, patch_size: int, swap_ratio: float, seed: float,
                progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        if models not in MODEL_SETS:
            raise ValueError(f"models must be one of {MODEL_SETS}; got {models!r}")
        dataset = ctx.dataset(dataset_name)
        checkpoints = ctx.models(dataset, model_a if models != "B only" else None,
                                 model_b if models != "A only" else None)
        if not checkpoints:
            raise ValueError("choose a checkpoint for the model(s) to look at")
        label = None if class_name == ALL_CLASSES else class_label(dataset, class_name)
        seed_int = int(seed if seed is not None else 0)
        progress(0.2, desc="swapping pairs and scoring them")
        gaps = confidence_gaps(dataset, {name: c.model for name, c in checkpoints.items()}, int(n_pairs),
                               int(patch_size), float(swap_ratio), seed_int, label)
        progress(0.8, desc="drawing")
        names = list(checkpoints)
        stats = {name: gap_statistics(gaps.gap(name), gaps.labels, gaps.teacher_is_a[name], dataset.num_classes)
                 for name in names}
        class_names = dataset.class_names
        hover = [f"class {class_names[int(c)]}: test #{int(a)} × #{int(b)}"
                 for a, b, c in zip(gaps.anchors, gaps.partners, gaps.labels, strict=True)]
        largest = torch.stack([gaps.gap(name) for name in names]).amax(0).argsort(descending=True)[:TABLE_ROWS]
        rows = {"class": [class_names[int(gaps.labels[i])] for i in largest],
                "test # a": gaps.anchors[largest].tolist(), "test # b": gaps.partners[largest].tolist()}
        for name in names:
            rows[f"gap {name}"] = _round(gaps.gap(name)[largest], 3)
            rows[f"teacher {name}"] = ["a′" if t else "b′" for t in gaps.teacher_is_a[name][largest].tolist()]
        result = {
            "dataset": dataset.name, "n_pairs": len(gaps.anchors), "class": class_name, "patch_size": int(patch_size),
            "swap_ratio": float(swap_ratio), "seed": seed_int,
            "models": {name: {"checkpoint": str(checkpoints[name].path), "mean_gap": s.mean, "median_gap": s.median,
                              "a_teaches": s.a_teaches, "mean_kd": float(gaps.kd[name].mean()),
                              "class_mean_gap": dict(zip(class_names, s.class_mean, strict=True))}
                       for name, s in stats.items()},
            "pairs": {"anchor": gaps.anchors.tolist(), "partner": gaps.partners.tolist(),
                      "label": gaps.labels.tolist(),
                      **{name: {"confidence_a": _round(gaps.confidence_a[name]),
                                "confidence_b": _round(gaps.confidence_b[name]),
                                "teacher_is_a": gaps.teacher_is_a[name].tolist(), "kd": _round(gaps.kd[name])}
                         for name in names}},
        }
        text = [f"**{len(gaps.anchors)} pairs**, {int(patch_size)}-pixel patches, ratio {float(swap_ratio):g}, seed "
                f"{seed_int}."]
        text += [f"- **{name}**: mean gap **{s.mean:.3f}** (median {s.median:.3f}); view a teaches in "
                 f"{100 * s.a_teaches:.0f} % of pairs; mean KL term {float(gaps.kd[name].mean()):.4f}"
                 for name, s in stats.items()]
        return (gap_histogram({name: gaps.gap(name) for name in names}),
                class_gap_bars(class_names, {name: s.class_mean for name, s in stats.items()}),
                gap_scatter(gaps.confidence_a, gaps.confidence_b, gaps.teacher_is_a, hover),
                pd.DataFrame(rows), "\n".join(text), result,
                {"dataset": dataset.name, "patch_size": int(patch_size), "ratio": float(swap_ratio), "seed": seed_int})

    run.click(compute, [header.dataset, header.model_a, header.model_b, which, class_filter, n_pairs, patch_size,
                        ratio, seed],
              [histogram, class_bars, scatter, table, summary, data, run_state], api_name="confidence_gaps",
              concurrency_id=MODEL_WORK, concurrency_limit=1)

    def change_dataset(dataset_name: str):
        dataset = ctx.dataset(dataset_name)
        n = len(dataset.test_labels)
        return (gr.Dropdown(choices=[ALL_CLASSES, *dataset.class_names], value=ALL_CLASSES),
                gr.Slider(maximum=n, value=min(500, n)),
                gr.Dropdown(choices=patch_sizes(dataset.image_size), value=default_patch_size(dataset.image_size)))

    header.dataset.input(model_work(ctx)(change_dataset), header.dataset, [class_filter, n_pairs, patch_size],
                         api_name="gaps_dataset")

    @model_work(ctx)
    def open_pair(settings: dict[str, Any] | None, evt: gr.SelectData):
        """A clicked table row -> its pair, patch size, ratio and seed in the Patch swap tab."""
        if not settings or evt.row_value is None:
            raise ValueError("compute the gaps first, then click a row of the table")
        class_value, anchor, partner = evt.row_value[:3]  # the table's first three columns
        dataset = ctx.dataset(settings["dataset"])
        index = build_class_index(dataset.test_labels, dataset.num_classes)
        label = class_label(dataset, str(class_value))
        top = class_size(dataset, label) - 1
        return (dataset.class_names[label], gr.Slider(maximum=top, value=int(index.rank[int(anchor)])),
                gr.Slider(maximum=top, value=int(index.rank[int(partner)])), settings["patch_size"],
                settings["ratio"], settings["seed"], None, None, gr.Tabs(selected="swap"))

    table.select(open_pair, run_state, [swap.class_name, swap.index_a, swap.index_b, swap.patch_size, swap.ratio,
                                        swap.seed, swap.upload_a, swap.upload_b, tabs],
                 api_name="open_gap_pair").success(
        swap.show, swap.inputs, swap.outputs, api_name="swap_opened_pair", concurrency_id=MODEL_WORK,
        concurrency_limit=1)
