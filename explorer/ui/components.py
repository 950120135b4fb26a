"""Widgets several tabs lay out alike."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

__all__ = ["FILTER_FROM", "choice_dropdown", "integer_dropdown", "result_views", "show_drawn_values",
           "typed_values_js"]

FILTER_FROM = 20  # a fixed list of this many choices or more (CIFAR-100's classes) can be filtered by typing


def choice_dropdown(choices: list[str] | list[tuple[str, str]], **kwargs: Any) -> gr.Dropdown:
    """A ``gr.Dropdown`` over a fixed list (datasets, classes, methods) that takes typing only to filter a long list.

    Typed text in a filterable dropdown stays in the box until it loses focus, whatever is drawn meanwhile: a
    Class box read "twelve" while class 3 was drawn. A short list is picked by mouse or arrow keys instead; a long
    one keeps the filter, where typing saves scrolling. Also the update a handler returns when the list changes.
    """
    return gr.Dropdown(choices=choices, filterable=len(choices) >= FILTER_FROM, **kwargs)


def integer_dropdown(choices: list[int] | list[tuple[str, int]], **kwargs: Any) -> gr.Dropdown:
    """A ``gr.Dropdown`` of whole numbers (patch sizes) whose API schema says so: Gradio describes any dropdown's
    choices as strings, so clients were told to send '4', which the app refuses. The schema is a plain integer
    (gradio_client renders any enum as quoted strings; the choices are still checked when a value arrives), set
    on the instance: a ``Dropdown`` subclass would make Gradio write a .pyi stub next to this module."""
    dropdown = gr.Dropdown(choices, filterable=False, **kwargs)  # a few sizes: picked, not typed (choice_dropdown)
    dropdown.api_info = lambda: {"type": "integer"}
    return dropdown


def result_views(name: str, table_label: str, plot_label: str, json_label: str,
                 plot_id: str | None = None) -> tuple[gr.Markdown, gr.Dataframe, gr.Plot, gr.JSON]:
    """A result's sentence, table, figure and raw JSON, laid out alike in every section (elem ids ``name-*``)."""
    summary = gr.Markdown(elem_id=f"{name}-summary")
    table = gr.Dataframe(label=table_label, interactive=False, wrap=True, elem_id=f"{name}-table")
    figure = gr.Plot(label=plot_label, show_label=False, elem_id=plot_id or f"{name}-plot")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label=json_label)
    return summary, table, figure, data


def typed_values_js(inputs: list[gr.components.Component]) -> str:
    """A browser-side step before an event: a number typed into a slider's box is clamped to its range and put
    on its nearest step (an emptied box takes the slider's position), as the slider itself would place it; a
    number typed into a whole-number box (``gr.Number(precision=0)``, a seed) is rounded, as Gradio rounds it on
    the server.

    Gradio refuses a whole event whose slider value is out of range, and the slider's clamping on blur sends no
    new event, so without this step a typed 150 on a 0-99 slider would leave every output in error, and a typed
    2.5 on a slider of whole samples was refused. With ``show_drawn_values`` the boxes then show what was drawn
    (a seed typed as 2.5 drew seed 2 while the box said 2.5). Components are found by their ``elem_id``; API
    calls skip this step and get the app's and Gradio's own checks.
    """
    fixes = "".join(f"v[{i}] = clamp({json.dumps(c.elem_id)}, v[{i}]); " for i, c in enumerate(inputs)
                    if isinstance(c, gr.Slider) and c.elem_id)
    fixes += "".join(f"v[{i}] = whole(v[{i}]); " for i, c in enumerate(inputs)
                     if isinstance(c, gr.Number) and c.precision == 0 and c.elem_id)
    return ("(...v) => { const clamp = (id, x) => { const r = document.querySelector(`#${id} input[type=range]`); "
            "if (r === null) return x; const n = (x === null || x === '' || isNaN(Number(x))) ? Number(r.value) : "
            "Number(x); const lo = Number(r.min), step = Number(r.step) > 0 ? Number(r.step) : 0; "
            "const on = step ? lo + Math.round((n - lo) / step) * step : n; "
            "return Math.min(Math.max(Number(on.toFixed(10)), lo), Number(r.max)); }; const whole = x => "
            "(x === null || x === '' || isNaN(Number(x))) ? x : Math.round(Number(x)); " + fixes + "return v; }")


def show_drawn_values(event: Any, boxes: list[gr.Slider | gr.Number]) -> None:
    """After ``event`` (a draw that took ``boxes`` through ``typed_values_js``), the sliders' and whole-number boxes
    show the values drawn: a typed 500 on a 0-99 slider drew 99 while the box still said 500, since Gradio clamps
    the box on blur, not on Enter. It runs in the browser only (no server call); give two boxes or more, so the
    answer is a list."""
    event.then(None, boxes, boxes, js=typed_values_js(boxes), api_visibility="private", show_progress="hidden")
