"""What the tabs share: the app's context (folders, device, caches, model work), event binding, the header.

Handlers are module-level functions whose first parameters are what the app holds (the ``AppContext``, the
``RunManager``, a tab's fixed values) and whose other parameters are the components' values, in the order of
the event's inputs. ``handler`` binds the first ones for Gradio and keeps the rest of the signature, which Gradio
reads: parameter names become the API's parameter names, a ``gr.Progress`` default and a ``gr.SelectData``
annotation are injected. A ``ValueError`` (what the plain functions raise for anything a user can get wrong)
becomes a ``gr.Error`` with the plain message.

Model work runs in three lanes, each a Gradio ``concurrency_id`` of its own, so that light work never
waits behind heavy work:

- ``MODEL_WORK``, the light lane: one picture's worth (a swapped pair, one Grad-CAM, one pair's patch
  evidence), bound with ``model_handler(small=True)`` and ``LIGHT_EVENTS``: tens to hundreds of milliseconds.
- ``ANALYSIS_WORK``: a pass over many test images (confidence gaps, Compare), about a second, bound with
  ``analysis_handler`` and ``ANALYSIS_EVENTS``: its answers are cached by inputs and checkpoint identity, so
  a class clicking the same defaults computes them once, and a cached answer waits for nothing.
- ``HEAVY_WORK``: long analyses (CAM faithfulness, patch evidence over many pairs: seconds to minutes), which
  copy the models they need (``private_models``) and run on the copies, also cached.

Thread safety, made explicit. A model is used by one thread at a time: each lane has a lock
(``AppContext.lane_work``) and its own instance of every model (``AppContext.checkpoint`` loads one per lane),
so a Grad-CAM's hooks or a model's train/eval mode are never seen by another lane's forward pass. The lock
also makes direct calls (tests, scripts, several apps in one process) safe; in the app, Gradio takes a few
events of a lane at once, so that their pre- and postprocessing (decoding inputs, encoding pictures) overlaps
with the model call that holds the lock. Torch's intra-op thread count: lane work on the CPU runs with one thread and
restores the calling thread's count after. With OpenMP (torch's CPU backend) the count is a per-thread setting
(``omp_set_num_threads`` sets the calling thread's value; a fresh thread copies the process default on its first
parallel region), so two lanes setting and restoring it at once do not disturb each other; on two cores the
lanes themselves are the parallelism. Events that run no model (dataset switches, the Train tab, the pickers)
neither take a lock nor touch the thread count.
"""

from __future__ import annotations

import copy
import functools
import inspect
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from gradio import processing_utils
from gradio.components.plot import PlotData
from PIL import Image
from torch import Tensor, nn

from explorer.analysis.cache import BoundedCache
from explorer.analysis.catalog import (
    checkpoint_folder,
    checkpoint_roots,
    list_checkpoints,
    public_text,
    weights_version,
)
from explorer.analysis.comparison import split_logits
from explorer.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from explorer.data import Dataset, load_dataset
from explorer.evaluate import check_compatible

__all__ = ["ANALYSIS_EVENTS", "ANALYSIS_WORK", "HEAVY_WORK", "LANES", "LIGHT_EVENTS", "MODEL_WORK", "AppContext",
           "Header", "analysis_handler", "handler", "integer_dropdown", "model_handler", "sendable"]

MODEL_WORK = "model"  # the light lane: one picture's worth of model work (see the module docstring)
ANALYSIS_WORK = "analysis"  # a pass over many test images (gaps, Compare), answers cached
HEAVY_WORK = "heavy"  # long analyses (seconds to minutes), which run on private model copies
LANES = (MODEL_WORK, ANALYSIS_WORK, HEAVY_WORK)
# How a light event is queued: Gradio takes up to 4 at once, so that one answer's pictures are encoded and sent
# while the next runs its model; the model calls themselves take the lane's lock in turn (``model_handler``).
LIGHT_EVENTS: dict[str, Any] = dict(concurrency_id=MODEL_WORK, concurrency_limit=4)
# How an analysis event is queued: cached answers need no lane, so up to 8 requests are taken at once; the ones
# that compute wait for the lane's lock in turn (``analysis_handler``).
ANALYSIS_EVENTS: dict[str, Any] = dict(concurrency_id=ANALYSIS_WORK, concurrency_limit=8)
OFFLINE_DATASETS = ("mnist5k", "digits")


@dataclass
class AppContext:
    """Where checkpoints come from and where models run, and what the app keeps in memory; built once per app.

    Four bounded caches of one kind (``BoundedCache``): datasets by name; loaded models by lane, checkpoint
    folder, device and weights-file version; a split's logits by checkpoint folder, weights-file version, dataset and
    split; the answers of long analyses (CAM faithfulness, evidence over many pairs) by their inputs and the
    checkpoints' folders and weights-file versions. A checkpoint replaced on disk gets a new version, so it is
    reloaded and its logits and analyses recomputed.

    The model pickers' values are public checkpoint names (``explorer.analysis.catalog``), never server paths; two
    checkpoint folders with the same folder name are refused when the context is built.
    """

    runs_dir: Path
    checkpoints_dir: Path
    device: torch.device
    datasets: BoundedCache[Dataset] = field(default_factory=lambda: BoundedCache(8))
    loaded: BoundedCache[Checkpoint] = field(default_factory=lambda: BoundedCache(8 * len(LANES)))
    logits: BoundedCache[Tensor] = field(default_factory=lambda: BoundedCache(16))
    analyses: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(32))
    pictures: tempfile.TemporaryDirectory = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="ips-explorer-pictures-"), repr=False)
    _lane_locks: dict[str, threading.RLock] = field(
        default_factory=lambda: {lane: threading.RLock() for lane in LANES}, repr=False)
    _current: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        checkpoint_roots(self.checkpoint_dirs)  # two folders with one name are refused now, not at the first pick

    @property
    def checkpoint_dirs(self) -> list[Path]:
        return [self.checkpoints_dir, self.runs_dir]

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        return list_checkpoints(self.checkpoint_dirs)

    def dataset(self, name: str) -> Dataset:
        if not name:
            raise ValueError("no dataset chosen; pick one from the list")
        return self.datasets.get(name, functools.partial(load_dataset, name))

    @property
    def lane(self) -> str:
        """The lane the calling thread works in: ``MODEL_WORK`` outside any ``lane_work``."""
        return getattr(self._current, "lane", MODEL_WORK)

    def checkpoint(self, path: str, dataset: Dataset) -> Checkpoint:
        """A listed checkpoint, loaded (cached) on the app's device, the calling lane's own instance; refused when
        it does not fit ``dataset``."""
        folder = checkpoint_folder(path, self.checkpoint_dirs)
        key = (self.lane, str(folder), str(self.device), *weights_version(folder))
        try:
            checkpoint = self.loaded.get(key, functools.partial(load_checkpoint, folder, self.device))
        except CheckpointError as exc:  # its message names the weights file: say it without the server's path
            raise CheckpointError(public_text(str(exc), self.checkpoint_dirs)) from None
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

    def split_logits(self, checkpoint: Checkpoint, dataset: Dataset, split: str = "test") -> Tensor:
        """``comparison.split_logits``, computed once per checkpoint file version, dataset and split."""
        key = (str(checkpoint.path), *weights_version(checkpoint.path), dataset.name, split)
        return self.logits.get(key, functools.partial(split_logits, checkpoint, dataset, split))

    def checkpoint_identity(self, path: str | None) -> tuple:
        """(folder, weights-file version) of a listed checkpoint; the value itself when it names none."""
        try:
            folder = checkpoint_folder(path, self.checkpoint_dirs) if path else None
        except ValueError:
            return (path,)
        return (str(folder), *weights_version(folder)) if folder else (None,)

    def analysis(self, kind: str, checkpoints: Mapping[str, Checkpoint], inputs: tuple,
                 make: Callable[[], Any]) -> Any:
        """The answer of a long analysis, computed once per ``kind``, ``inputs`` and checkpoint weights version."""
        identity = tuple((name, str(c.path), *weights_version(c.path)) for name, c in checkpoints.items())
        return self.analyses.get((kind, inputs, identity), make)

    def private_models(self, checkpoints: Mapping[str, Checkpoint]) -> dict[str, nn.Module]:
        """Copies of the checkpoints' models for ``HEAVY_WORK``, taken while no other model work runs."""
        with self.model_work():
            return {name: copy.deepcopy(checkpoint.model) for name, checkpoint in checkpoints.items()}

    def model_work(self, small: bool = False) -> AbstractContextManager[None]:
        """Light-lane work (``lane_work(MODEL_WORK, small)``)."""
        return self.lane_work(MODEL_WORK, small)

    @contextmanager
    def lane_work(self, lane: str, small: bool = False) -> Iterator[None]:
        """Run a model call alone in ``lane``; ``small`` work on the CPU runs single-threaded (module docstring).

        A forward pass over a handful of 28x28 images takes 2 ms on one core but 100+ ms on two when the other
        core is busy (threads wait for each other), so lane work skips intra-op parallelism.
        """
        with self._lane_locks[lane]:
            outer = getattr(self._current, "lane", None)
            self._current.lane = lane
            previous = torch.get_num_threads()
            single = small and self.device.type == "cpu"
            if single:
                torch.set_num_threads(1)
            try:
                yield
            finally:
                if single:
                    torch.set_num_threads(previous)
                if outer is None:
                    del self._current.lane
                else:
                    self._current.lane = outer


def handler(fn: Callable[..., Any], *bound: Any,
            work: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Callable[..., Any]:
    """``fn`` with its first parameters bound to ``bound``, run inside ``work()``, ValueError -> gr.Error.

    The result shows Gradio ``fn``'s signature and annotations without the bound parameters (see the module
    docstring); ``functools.partial`` would hide the annotations Gradio needs to inject a ``gr.SelectData``.
    """
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if len(bound) > len(parameters):
        raise TypeError(f"{fn.__name__} takes {len(parameters)} parameters; {len(bound)} were bound")
    bound_names = {p.name for p in parameters[:len(bound)]}

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with work():
                return fn(*bound, *args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    run.__signature__ = signature.replace(parameters=parameters[len(bound):])  # type: ignore[attr-defined]
    run.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k not in bound_names}
    return run


def model_handler(ctx: AppContext, fn: Callable[..., Any], *bound: Any, small: bool = False) -> Callable[..., Any]:
    """``handler(fn, ctx, *bound)`` run as light-lane model work (``AppContext.model_work``)."""
    return handler(fn, ctx, *bound, work=functools.partial(ctx.model_work, small))


def analysis_handler(ctx: AppContext, fn: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """``handler(fn, ctx, *bound)`` run in ``ANALYSIS_WORK`` (single-threaded on the CPU), its answer cached.

    The cache key is ``fn``'s name, its arguments (Gradio's ``progress`` left out) and the identity (folder and
    weights-file version) of the checkpoints named by its ``model_a`` and ``model_b`` parameters, so a run that
    saved a newer epoch is computed again. A cached answer is returned at once, without the lane's lock; a miss
    takes the lock and looks again, so a class asking the same question at once computes it once. Refusals
    (``ValueError``) are not cached: ``BoundedCache`` stores only what was computed. The answer is kept in the form
    Gradio sends (``sendable``), so a cached answer is not encoded again. Bind it with ``ANALYSIS_EVENTS``.
    """
    signature = inspect.signature(fn)
    model_parameters = [name for name in signature.parameters if name in ("model_a", "model_b")]

    def cached(context: AppContext, *args: Any, **kwargs: Any) -> Any:
        given = signature.bind_partial(context, *args, **kwargs).arguments
        inputs = tuple((name, _hashable(value)) for name, value in given.items() if name not in ("ctx", "progress"))
        identity = tuple(context.checkpoint_identity(given.get(name)) for name in model_parameters)

        def compute() -> Any:
            return sendable(fn(context, *args, **kwargs), Path(context.pictures.name))

        key = (fn.__name__, inputs, identity)
        if key in context.analyses:
            return context.analyses.get(key, compute)
        with context.lane_work(ANALYSIS_WORK, small=True):
            return context.analyses.get(key, compute)

    functools.update_wrapper(cached, fn)
    return handler(cached, ctx, *bound)


def sendable(value: Any, folder: Path) -> Any:
    """``value`` (a handler's answer) with its figures and gallery pictures in the form Gradio sends them.

    Gradio encodes a figure (plotly's ``to_json``) and every gallery picture (an image file each) on every answer,
    also for an answer served from a cache: about half of a repeated Compare's 85 ms of server time. A plotly
    figure becomes its ``PlotData`` (which ``gr.Plot`` passes through) and a gallery, a list of (picture,
    caption), lists the pictures as PNG files in ``folder`` (named by their content; the app's own temporary
    folder, which Gradio's hourly cleanup does not touch, so a cached answer's files stay, and which ``build_app``
    declares static, so Gradio serves them from there instead of checking and copying them on every answer;
    a folder holds one file per distinct picture of the cached answers, a few KB each). Everything else
    (tables, JSON, ``gr.State`` values, ``gr.skip()``) is left as it is; tuples and lists are walked.
    """
    if isinstance(value, go.Figure):
        return PlotData(type="plotly", plot=value.to_json())
    if isinstance(value, list) and value and all(_gallery_item(item) for item in value):
        return [(processing_utils.save_pil_to_cache(_picture(image), str(folder), format="png"), caption)
                for image, caption in value]
    if isinstance(value, tuple | list):
        return type(value)(sendable(item, folder) for item in value)
    return value


def _gallery_item(item: Any) -> bool:
    return (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray | Image.Image)
            and isinstance(item[1], str))


def _picture(image: np.ndarray | Image.Image) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def _hashable(value: Any) -> Any:
    """A cache-key form of a component's value (lists and dicts become tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def integer_dropdown(choices: list[int] | list[tuple[str, int]], **kwargs: Any) -> gr.Dropdown:
    """A ``gr.Dropdown`` of whole numbers (patch sizes) whose API schema says so: Gradio describes any dropdown's
    choices as strings, so clients were told to send '4', which the app refuses. The schema is a plain integer
    (gradio_client renders any enum as quoted strings; the choices are still checked when a value arrives), set
    on the instance: a ``Dropdown`` subclass would make Gradio write a .pyi stub next to this module."""
    dropdown = gr.Dropdown(choices, **kwargs)
    dropdown.api_info = lambda: {"type": "integer"}
    return dropdown


# --------------------------------------------------------------------------------------------------
# The header: one dataset and the two models every tab looks at
# --------------------------------------------------------------------------------------------------
@dataclass
class Header:
    """The pickers above the tabs."""

    dataset: gr.Dropdown
    model_a: gr.Dropdown
    model_b: gr.Dropdown


def result_views(name: str, table_label: str, plot_label: str, json_label: str,
                 plot_id: str | None = None) -> tuple[gr.Markdown, gr.Dataframe, gr.Plot, gr.JSON]:
    """A result's sentence, table, figure and raw JSON, laid out alike in every section (elem ids ``name-*``)."""
    summary = gr.Markdown(elem_id=f"{name}-summary")
    table = gr.Dataframe(label=table_label, interactive=False, wrap=True, elem_id=f"{name}-table")
    figure = gr.Plot(label=plot_label, show_label=False, elem_id=plot_id or f"{name}-plot")
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label=json_label)
    return summary, table, figure, data
