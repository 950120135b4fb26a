"""What the tabs share: the app's folders and device, the header pickers, and the model-work wrapper.

Every event that runs a model goes through ``model_work``: one ``concurrency_id`` serialises them (the
models and their CAM hooks are shared), and bad input — a ``ValueError`` from the plain functions, which
is what they raise for anything a user can get wrong — becomes a ``gr.Error`` with the plain message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from explorer.analysis.catalog import checkpoint_folder, default_pair, list_checkpoints, load_cached
from explorer.checkpoints import Checkpoint, load_card
from explorer.data import Dataset, load_dataset
from explorer.evaluate import check_compatible

__all__ = ["MODEL_WORK", "AppContext", "Header", "build_header", "model_work"]

MODEL_WORK = "model"  # the concurrency_id of every event that runs a model
OFFLINE_DATASETS = ("mnist5k", "digits")


@dataclass
class AppContext:
    """Where checkpoints come from and where models run; built once per app."""

    runs_dir: Path
    checkpoints_dir: Path
    device: torch.device

    @property
    def checkpoint_dirs(self) -> list[Path]:
        return [self.checkpoints_dir, self.runs_dir]

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        return list_checkpoints(self.checkpoint_dirs)

    def dataset_choices(self) -> list[str]:
        """The offline datasets plus every dataset a listed checkpoint was trained on."""
        names = list(OFFLINE_DATASETS)
        for _, path in self.checkpoint_choices():
            try:
                name = load_card(path)["dataset"]
            except ValueError:
                continue
            if name not in names:
                names.append(name)
        return names

    def dataset(self, name: str) -> Dataset:
        if not name:
            raise ValueError("no dataset chosen; pick one from the list")
        return load_dataset(name)

    def checkpoint(self, path: str, dataset: Dataset) -> Checkpoint:
        """A listed checkpoint, loaded (cached) on the app's device; refused when it does not fit ``dataset``."""
        checkpoint = load_cached(checkpoint_folder(path, self.checkpoint_dirs), self.device)
        check_compatible(checkpoint.card, dataset)
        return checkpoint

    def models(self, dataset: Dataset, path_a: str | None, path_b: str | None) -> dict[str, Checkpoint]:
        """The chosen checkpoints by display name ("A · ce", "B · ips"); an empty choice is left out."""
        chosen = {}
        for slot, path in (("A", path_a), ("B", path_b)):
            if path:
                try:
                    checkpoint = self.checkpoint(path, dataset)
                except ValueError as exc:
                    raise ValueError(f"Model {slot}: {exc}") from None
                chosen[f"{slot} · {checkpoint.card.get('method', '?')}"] = checkpoint
        return chosen


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_work(ctx: AppContext, small: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap an event handler: ValueError -> gr.Error; ``small`` work runs single-threaded on the CPU.

    A forward pass over a handful of 28x28 images takes 2 ms on one core but 100+ ms on two when the other
    core is busy (threads wait for each other), so interactive handlers skip intra-op parallelism.
    """
    threads = 1 if small and ctx.device.type == "cpu" else None

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                with _threads(threads):
                    return fn(*args, **kwargs)
            except gr.Error:
                raise
            except ValueError as exc:
                raise gr.Error(str(exc), print_exception=False) from None

        return run

    return wrap


@dataclass
class Header:
    """The pickers above the tabs: one dataset and the two models every tab looks at."""

    dataset: gr.Dropdown
    model_a: gr.Dropdown
    model_b: gr.Dropdown


def build_header(ctx: AppContext) -> Header:
    """Dataset and model pickers; their lists are re-read from disk whenever a picker gets focus."""
    choices = ctx.checkpoint_choices()
    default_a, default_b = default_pair(ctx.checkpoint_dirs)
    with gr.Row(equal_height=True):
        dataset = gr.Dropdown(ctx.dataset_choices(), value="mnist5k", label="Dataset", scale=1,
                              info="test split; the models must be trained on it")
        model_a = gr.Dropdown(choices, value=default_a, label="Model A: baseline", allow_custom_value=True, scale=2,
                              info="a demo checkpoint or a training run")
        model_b = gr.Dropdown(choices, value=default_b, label="Model B: IPS", allow_custom_value=True, scale=2,
                              info="a demo checkpoint or a training run")

    def refresh_models(current: str | None) -> gr.Dropdown:
        return gr.Dropdown(choices=ctx.checkpoint_choices(), value=current)

    def refresh_datasets(current: str | None) -> gr.Dropdown:
        return gr.Dropdown(choices=ctx.dataset_choices(), value=current)

    for picker, name in ((model_a, "refresh_model_a"), (model_b, "refresh_model_b")):
        picker.focus(refresh_models, picker, picker, api_name=name, queue=False, show_progress="hidden")
    dataset.focus(refresh_datasets, dataset, dataset, api_name="refresh_datasets", queue=False,
                  show_progress="hidden")
    return Header(dataset, model_a, model_b)
