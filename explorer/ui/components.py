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
    """A browser-side step before an event: a number typed into a slider's box beyond its range is clamped to it
    (an emptied box takes the slider's position), as the slider itself does on blur.

    Gradio refuses a whole event whose slider value is out of range, and the slider's clamping on blur sends no
    new event, so without this step a typed 150 on a 0-99 slider would leave every output in error. Sliders are
    found by their ``elem_id``; API calls skip this step and get Gradio's range check.
    """
    fixes = "".join(f"v[{i}] = clamp({json.dumps(c.elem_id)}, v[{i}]); " for i, c in enumerate(inputs)
                    if isinstance(c, gr.Slider) and c.elem_id)
    return ("(...v) => { const clamp = (id, x) => { const r = document.querySelector(`#${id} input[type=range]`); "
            "if (r === null) return x; const n = (x === null || x === '' || isNaN(Number(x))) ? Number(r.value) : "
            "Number(x); return Math.min(Math.max(n, Number(r.min)), Number(r.max)); }; " + fixes + "return v; }")


def show_drawn_values(event: Any, sliders: list[gr.Slider]) -> None:
    """After ``event`` (a draw that took ``sliders`` through ``typed_values_js``), the sliders' boxes show the values
    drawn: a typed 500 on a 0-99 slider drew 99 while the box still said 500, since Gradio clamps the box on blur,
    not on Enter. It runs in the browser only (no server call); give two sliders or more, so the answer is a list."""
    event.then(None, sliders, sliders, js=typed_values_js(sliders), api_visibility="private", show_progress="hidden")
