"""Widgets several tabs lay out alike."""

from __future__ import annotations

from typing import Any

__all__ = ["integer_dropdown", "result_views"]

import gradio as gr


def integer_dropdown(choices: list[int] | list[tuple[str, int]], **kwargs: Any) -> gr.Dropdown:
    """A ``gr.Dropdown`` of whole numbers (patch sizes) whose API schema says so: Gradio describes any dropdown's
    choices as strings, so clients were told to send '4', which the app refuses. The schema is a plain integer
    (gradio_client renders any enum as quoted strings; the choices are still checked when a value arrives), set
    on the instance: a ``Dropdown`` subclass would make Gradio write a .pyi stub next to this module."""
    dropdown = gr.Dropdown(choices, **kwargs)
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
