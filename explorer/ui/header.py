"""The header above the tabs: one dataset and the two models every tab looks at, always consistent.

Dataset and models move together. The model pickers offer only checkpoints trained on the chosen dataset, and
switching the dataset picks that dataset's checkpoints in the same step (model A: the first baseline, model B:
the first IPS model; a current choice that fits stays). The tabs redraw *after* that step: each chains its own
update to ``Header.switched`` with ``.then``, so no tab ever runs the new dataset with the old dataset's models,
and a person may pick dataset and models in any order. A dataset without a baseline or an IPS checkpoint gets a
line saying so, and a button that trains the missing pair in the background (the Train tab wires it: it owns
the run manager). A dataset that cannot be opened (e.g. a checkpoint's CIFAR files are not on this machine) is
refused with a warning and the previous dataset stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from explorer.analysis.catalog import checkpoint_folder
from explorer.analysis.schedules import estimate_text, fair_schedule
from explorer.checkpoints import CheckpointError, load_card
from explorer.data import OFFLINE_DATASETS, DatasetError
from explorer.training.methods import BASELINE, FEATURED
from explorer.training.study import busy_note
from explorer.ui.binding import flatten, handler
from explorer.ui.components import choice_dropdown
from explorer.ui.context import AppContext

__all__ = ["Header", "build_header", "dataset_checkpoints", "dataset_choices", "missing_methods", "notice_text",
           "HeaderView", "pick_models", "refresh_datasets", "refresh_models", "switch_dataset", "train_label"]


@dataclass
class Header:
    """The pickers above the tabs (one dataset and the two models every tab looks at), the line about the
    dataset's checkpoints, and the dataset switch's event."""

    dataset: gr.Dropdown
    model_a: gr.Dropdown
    model_b: gr.Dropdown
    notice: gr.Markdown
    train_pair: gr.Button  # trains the baseline and IPS on the dataset (wired by the Train tab)
    switched: Any  # the dataset switch's Dependency: a tab chains its update to it with ``.then``

    @property
    def pickers(self) -> list[gr.Dropdown]:
        """Dataset, model A, model B: the first inputs of every tab's model work."""
        return [self.dataset, self.model_a, self.model_b]

    @property
    def models_picked(self) -> list[Any]:
        """The events of a person picking model A or model B."""
        return [self.model_a.input, self.model_b.input]


# --------------------------------------------------------------------------------------------------
# Plain functions
# --------------------------------------------------------------------------------------------------
def _cards(ctx: AppContext) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, public name, model card) of every listed checkpoint whose card can be read."""
    found = []
    for label, name in ctx.checkpoint_choices():
        try:
            found.append((label, name, load_card(checkpoint_folder(name, ctx.checkpoint_dirs))))
        except (CheckpointError, ValueError):
            continue
    return found


def dataset_checkpoints(ctx: AppContext, dataset_name: str) -> list[tuple[str, str, str]]:
    """(label, public name, method) of every listed checkpoint trained on ``dataset_name``."""
    return [(label, path, str(card.get("method", "?"))) for label, path, card in _cards(ctx)
            if card.get("dataset") == dataset_name]


def dataset_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, name) of the offline datasets and of every dataset a checkpoint was trained on, with their counts."""
    trained_on = [card.get("dataset") for _, _, card in _cards(ctx)]
    names = [*OFFLINE_DATASETS, *dict.fromkeys(n for n in trained_on if n and n not in OFFLINE_DATASETS)]
    return [(f"{name} · {_count(trained_on.count(name))}", name) for name in names]


def _count(n: int) -> str:
    return "no checkpoint yet" if n == 0 else f"{n} checkpoint{'s' * (n != 1)}"


def pick_models(checkpoints: list[tuple[str, str, str]], model_a: str | None,
                model_b: str | None) -> tuple[str | None, str | None]:
    """Models A and B for a dataset: current choices that fit it stay; else its first baseline and first IPS model."""
    by_method: dict[str, str] = {}
    for _, path, method in checkpoints:
        by_method.setdefault(method, path)
    offered = {path for _, path, _ in checkpoints}
    a = model_a if model_a in offered else by_method.get(BASELINE)
    b = model_b if model_b in offered else by_method.get(FEATURED)
    return a, b


def missing_methods(checkpoints: list[tuple[str, str, str]]) -> list[str]:
    """The methods of the default pair (baseline, IPS) that have no checkpoint on this dataset."""
    methods = {method for _, _, method in checkpoints}
    return [m for m in (BASELINE, FEATURED) if m not in methods]


def notice_text(dataset_name: str, checkpoints: list[tuple[str, str, str]]) -> str:
    """One line about the dataset's checkpoints when the default pair is incomplete; else nothing."""
    missing = missing_methods(checkpoints)
    if not missing:
        return ""
    names = [m.upper() for m in missing]
    what = "no checkpoint" if not checkpoints else f"no {' and no '.join(names)} checkpoint"
    return (f"There is {what} trained on **{dataset_name}** here yet: train {' and '.join(names)} with the button "
            f"on the right ({fair_schedule(dataset_name).epochs} epochs each, in the background), or in the Train "
            "tab. Finished runs appear in the model pickers.")


def train_label(ctx: AppContext, dataset_name: str, checkpoints: list[tuple[str, str, str]]) -> str | None:
    """The training button's text, with this machine's time estimate; None when nothing is missing."""
    missing = missing_methods(checkpoints)
    if not missing:
        return None
    epochs = fair_schedule(dataset_name).epochs
    times = [estimate_text({"dataset": dataset_name, "method": m, "epochs": epochs}, ctx.runs_dir)[0]
             for m in missing]
    when = "; ".join(filter(None, [", ".join(times), busy_note()]))  # the load, said as the Study tab says it
    return f"Train {' and '.join(m.upper() for m in missing)} on {dataset_name} ({when})"


class HeaderView(NamedTuple):
    """One answer of ``switch_dataset`` (or its components)."""

    dataset: Any
    model_a: Any
    model_b: Any
    notice: Any  # the line about what is missing
    train_pair: Any  # the one-click training button
    shown: Any  # the dataset the tabs show (a state)


def switch_dataset(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
                   previous: str | None) -> HeaderView:
    """A new dataset: its checkpoints in both pickers (chosen as ``pick_models``), the line about what is missing
    and the training button; a dataset that cannot be opened is refused with a warning and ``previous`` stays."""
    try:
        ctx.dataset(dataset_name)
    except (DatasetError, ValueError) as exc:
        if not previous or previous == dataset_name:
            raise
        gr.Warning(f"{dataset_name} cannot be opened here ({exc}); showing {previous} again")
        dataset_name = previous
    checkpoints = dataset_checkpoints(ctx, dataset_name)
    a, b = pick_models(checkpoints, model_a, model_b)
    choices = [(text, path) for text, path, _ in checkpoints]
    label = train_label(ctx, dataset_name, checkpoints)
    return HeaderView(dataset_name, gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=choices, value=b),
                      notice_text(dataset_name, checkpoints), gr.Button(label or "", visible=label is not None),
                      dataset_name)


def refresh_models(ctx: AppContext, dataset_name: str, current: str | None) -> gr.Dropdown:
    """A model picker's list, rescanned from disk (a run may have finished since): the dataset's checkpoints."""
    return gr.Dropdown(choices=[(label, path) for label, path, _ in dataset_checkpoints(ctx, dataset_name)],
                       value=current)


def refresh_datasets(ctx: AppContext, current: str | None) -> gr.Dropdown:
    """The dataset picker's list, rescanned from the checkpoints on disk."""
    return choice_dropdown(dataset_choices(ctx), value=current)


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
def build_header(ctx: AppContext, dataset_name: str = "mnist5k") -> Header:
    """Dataset and model pickers, the line about missing checkpoints and its training button."""
    checkpoints = dataset_checkpoints(ctx, dataset_name)
    choices = [(label, path) for label, path, _ in checkpoints]
    default_a, default_b = pick_models(checkpoints, None, None)
    info = "checkpoints trained on the chosen dataset"
    with gr.Row(equal_height=True):
        dataset = choice_dropdown(dataset_choices(ctx), value=dataset_name, label="Dataset", scale=1,
                                  info="test split; the model lists follow it", elem_id="header-dataset")
        model_a = gr.Dropdown(choices, value=default_a, label="Model A: baseline", allow_custom_value=True, scale=2,
                              info=info, elem_id="header-model-a")
        model_b = gr.Dropdown(choices, value=default_b, label="Model B: IPS", allow_custom_value=True, scale=2,
                              info=info, elem_id="header-model-b")
    with gr.Row(equal_height=True):
        notice = gr.Markdown(notice_text(dataset_name, checkpoints), elem_id="header-notice")
        label = train_label(ctx, dataset_name, checkpoints)
        train_pair = gr.Button(label or "", visible=label is not None, scale=0, min_width=260, elem_id="header-train")
    shown = gr.State(dataset_name)  # the dataset the tabs show: where a refused switch returns to
    quiet = dict(queue=False, show_progress="hidden")
    for picker, name in ((model_a, "refresh_model_a"), (model_b, "refresh_model_b")):
        picker.focus(handler(refresh_models, ctx), [dataset, picker], picker, api_name=name, **quiet)
    dataset.focus(handler(refresh_datasets, ctx), dataset, dataset, api_name="refresh_datasets", **quiet)
    switched = dataset.input(handler(switch_dataset, ctx), [dataset, model_a, model_b, shown],
                             flatten(HeaderView(dataset, model_a, model_b, notice, train_pair, shown)),
                             api_name="switch_dataset",
                             show_progress="hidden")
    return Header(dataset, model_a, model_b, notice, train_pair, switched)
