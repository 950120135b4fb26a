"""Binding handlers to events: what the app holds bound first, refusals answered by who asked, answers as named
records in the form Gradio sends.

Handlers are module-level functions whose first parameters are what the app holds (the ``AppContext``, the
``RunManager``, a tab's fixed values) and whose other parameters are the components' values, in the order of
the event's inputs. ``handler`` binds the first ones for Gradio and keeps the rest of the signature, which Gradio
reads: parameter names become the API's parameter names, a ``gr.Progress`` default and a ``gr.SelectData``
annotation are injected.

A ``ValueError`` is what the plain functions raise for anything a user can get wrong. How it is answered depends
on who asked. A person's event in the page (it names the component that triggered it) gets a ``gr.Warning`` with
the plain message and ``gr.skip()`` for every output, so the panels keep the last good view: a ``gr.Error`` would
mark every output of the event with a red Error badge. A program's call (the API, a test: no trigger) gets a
``gr.Error`` with the plain message, so the client sees the refusal as a failure.

A refused typed value would stay in its box, and every later event of the tab would send it again and be refused
for it until corrected; ``restore_refused`` puts the last value the handler accepted from that session back in.

A tab's answer is one named record (a ``NamedTuple``): its fields name the outputs once. The tab builds the same
record with its output components as values, and ``flatten`` turns either into the flat sequence Gradio takes
(nested records in place), so the outputs' order and the answer's order cannot drift and tests read fields.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from gradio import processing_utils
from gradio.components.plot import PlotData
from PIL import Image

from explorer.ui.context import ANALYSIS_WORK, AppContext
from explorer.ui.heavy import ClientGone, StoppingProgress, current_session

__all__ = ["TRIGGER", "analysis_handler", "flatten", "handler", "heavy_handler", "is_record", "model_handler",
           "refusal", "restore_refused", "sendable"]

TRIGGER = "trigger_"  # the parameter Gradio fills with the event's data: who triggered it (None for the API)
SESSIONS_KEPT = 10_000  # (session, handler) pairs whose last accepted values are remembered (a few numbers each)


class _Accepted:
    """Per (session, handler): the arguments of the handler's last accepted event in the page, and whether the
    latest event from a person was refused (read once, by ``restore_refused``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arguments: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._refused: set[tuple[str, int]] = set()

    def accepted(self, key: tuple[str, int], arguments: dict[str, Any]) -> None:
        with self._lock:
            self._arguments[key] = arguments
            self._arguments.move_to_end(key)
            self._refused.discard(key)
            while len(self._arguments) > SESSIONS_KEPT:
                self._refused.discard(self._arguments.popitem(last=False)[0])

    def refused(self, key: tuple[str, int]) -> None:
        with self._lock:
            if key in self._arguments:
                self._refused.add(key)

    def take_refused(self, key: tuple[str, int]) -> dict[str, Any] | None:
        """The last accepted arguments when the latest event was refused (then forgotten), else None."""
        with self._lock:
            if key not in self._refused:
                return None
            self._refused.discard(key)
            return self._arguments.get(key)


_ACCEPTED = _Accepted()


def handler(fn: Callable[..., Any], *bound: Any,
            work: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Callable[..., Any]:
    """``fn`` with its first parameters bound to ``bound``, run inside ``work()``, a ``ValueError`` answered as
    ``refusal`` says.

    The result shows Gradio ``fn``'s signature and annotations without the bound parameters (see the module
    docstring) and with one more, ``TRIGGER``, annotated ``gr.EventData``, which Gradio fills and the API does not
    list; ``functools.partial`` would hide the annotations Gradio needs to inject a ``gr.SelectData``.
    """
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if len(bound) > len(parameters):
        raise TypeError(f"{fn.__name__} takes {len(parameters)} parameters; {len(bound)} were bound")
    bound_names = {p.name for p in parameters[:len(bound)]}
    trigger = inspect.Parameter(TRIGGER, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation=gr.EventData)
    shown = signature.replace(parameters=[*parameters[len(bound):], trigger])

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        values = shown.bind(*args, **kwargs)
        event = values.arguments.pop(TRIGGER, None)
        session = current_session() if run.restored else None  # also the page's load event, which names no trigger
        try:
            with work():
                answer = flatten(fn(*bound, *values.args, **values.kwargs))
        except gr.Error:
            raise
        except ValueError as exc:
            if session is not None and _from_page(event):
                _ACCEPTED.refused((session, id(run)))
            return refusal(str(exc), event)
        if session is not None:
            _ACCEPTED.accepted((session, id(run)), {name: values.arguments.get(name) for name in run.restored})
        return answer

    run.restored = ()  # type: ignore[attr-defined]  # the parameters restore_refused puts back, the only ones kept
    run.__signature__ = shown  # type: ignore[attr-defined]
    run.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k not in bound_names},
                           TRIGGER: gr.EventData}
    return run


def is_record(value: Any) -> bool:
    """Whether ``value`` is a named record (a ``NamedTuple`` instance)."""
    return isinstance(value, tuple) and hasattr(value, "_fields")


def flatten(value: Any) -> Any:
    """A record's values in field order, nested records in place, as a list (what Gradio takes for an event's
    outputs, and for the components of ``outputs=``); anything else as it is."""
    if not is_record(value):
        return value
    return [item for field in value for item in (flatten(field) if is_record(field) else [field])]


def _from_page(event: gr.EventData | None) -> bool:
    """Whether the event is a person's in the page (it names the component that triggered it), not a program's."""
    return event is not None and getattr(event, "target", None) is not None


def refusal(message: str, event: gr.EventData | None) -> Any:
    """The answer to a refused input: for a person's event in the page, a warning and every output left as it was
    (``gr.skip()``); for a program's call, ``gr.Error`` (see the module docstring)."""
    if _from_page(event):
        gr.Warning(message)
        return gr.skip()
    raise gr.Error(message, print_exception=False) from None


def restore_refused(event: Any, bound_handler: Callable[..., Any],
                    controls: dict[str, gr.components.Component]) -> None:
    """After ``event`` (an event of ``bound_handler``, made by ``handler``), when the handler refused it, put back
    into each of ``controls`` (the handler's parameter name -> the component that gives it) the value of the last
    event it accepted from the same session; otherwise leave them. A private step that sends no input and sets
    nothing after an accepted event. For the boxes the app can refuse from the page (a seed out of range, a CAM
    layer the models lack): sliders cannot be, ``typed_values_js`` brings their values into range and onto
    their steps first, and they are set by other events too (a new dataset or class)."""
    names, components = list(controls), list(controls.values())
    kept = bound_handler.restored  # type: ignore[attr-defined]
    bound_handler.restored = (*kept, *(name for name in names if name not in kept))  # type: ignore[attr-defined]

    def restore(request: gr.Request) -> Any:
        arguments = _ACCEPTED.take_refused((request.session_hash, id(bound_handler)))
        if arguments is None:
            return gr.skip()
        values = [arguments.get(name, gr.skip()) for name in names]
        return values if len(values) > 1 else values[0]  # Gradio takes one output's value alone

    event.then(restore, None, components, api_visibility="private", show_progress="hidden", queue=False)


def model_handler(ctx: AppContext, fn: Callable[..., Any], *bound: Any, small: bool = False) -> Callable[..., Any]:
    """``handler(fn, ctx, *bound)`` run as light-lane model work (``AppContext.model_work``)."""
    return handler(fn, ctx, *bound, work=functools.partial(ctx.model_work, small))


def heavy_handler(ctx: AppContext, fn: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """``handler(fn, ctx, *bound)`` let into the heavy lane by ``ctx.heavy`` (one per session, a few at a time, one
    computing; a refusal says "busy"), its ``progress`` parameter a ``StoppingProgress``: when the client has
    gone, the work stops at its next progress report and the answer is ``gr.skip()``. Bind it with
    ``HEAVY_EVENTS``."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def stopping(*args: Any, **kwargs: Any) -> Any:
        values = signature.bind(*args, **kwargs)
        values.apply_defaults()
        if "progress" in values.arguments:
            values.arguments["progress"] = StoppingProgress(values.arguments["progress"])
        try:
            return fn(*values.args, **values.kwargs)
        except ClientGone:
            return gr.skip()

    return handler(stopping, ctx, *bound, work=lambda: ctx.heavy.admit(current_session()))


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
    also for an answer served from a cache: much of a repeated Compare's server time. A plotly
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
    if is_record(value):
        return value._make(sendable(item, folder) for item in value)
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


