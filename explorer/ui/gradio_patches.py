"""Workarounds for Gradio internals, installed once at start-up by ``install()``.

Each replaces one Gradio function or class attribute whose behaviour hurt this app (a race, a log flooded by
refusals, start-up work per session, repeated path resolution) and says why in its docstring. Each was written
against one Gradio release (``GRADIO_CHECKED``): ``install`` applies them only on that minor version and otherwise
leaves Gradio as it is and says so once, since a patch of internals may not fit another release.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import gradio as gr
import httpx
from gradio import exceptions, networking, processing_utils, queueing, routes, state_holder, utils
from PIL import Image

__all__ = ["GRADIO_CHECKED", "PATIENCE_S", "QuietRefusals", "install", "installed", "is_static_file",
           "lean_session_state", "patient_url_ok", "save_pil_to_cache_atomically"]

GRADIO_CHECKED = "6.31"  # the Gradio minor version these workarounds were written and tested against
_log = logging.getLogger(__name__)
_installed: list[bool] = []


def save_pil_to_cache_atomically(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, written atomically and only once per content.

    Gradio names a picture's cache file by the hash of its bytes and rewrites that file in place on every
    answer (truncate, then write): when two users get the same picture at once (a class on the defaults), one of
    them may download it while the other's answer truncates it, and receives 0 bytes ("Too little data for
    declared Content-Length"). That is Gradio's race (its ``save_file_to_cache`` already writes under a temporary
    name and skips existing copies; this one does not). Here the bytes go to a temporary file renamed into
    place, and an existing copy (same hash, same bytes) is only touched, as Gradio does for files, so that
    ``delete_cache`` ages it from its latest use.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    if target.exists():
        os.utime(target)
        return str(target)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".partial-")
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, target)
    return str(target)


class QuietRefusals(ModuleType):
    """The ``traceback`` module as Gradio's request handling sees it, with ``print_exc`` one line for a refusal.

    Gradio checks every input against its component (a patch size not among a dropdown's choices, a slider value
    out of range, text for a number) and refuses the request with an error the user sees; it also prints the
    refusal's whole traceback into the server's log (``queueing.py``, ``routes.py``, ``utils.py`` call
    ``traceback.print_exc()`` for any ``gradio.Error`` raised with its default ``print_exception=True``, which is
    how Gradio raises its own). On a shared server a client sending bad values would fill the log with
    tracebacks of nothing wrong. A refusal (``gradio.Error``, ``ComponentProcessingError``, ``InvalidPathError``: a
    file path a client may not name) is logged as one line of at most 300 characters; any other exception, a bug,
    keeps its full traceback. The app's own refusals print nothing (``binding.handler`` raises them with
    ``print_exception=False``).
    """

    REFUSALS = (exceptions.Error, exceptions.ComponentProcessingError, exceptions.InvalidPathError)

    def __init__(self) -> None:
        super().__init__("traceback")

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @classmethod
    def print_exc(cls, *args: Any, **kwargs: Any) -> None:
        exc = sys.exception()
        if isinstance(exc, cls.REFUSALS):
            message = " ".join(str(getattr(exc, "message", None) or exc).split()) or type(exc).__name__
            print(f"IPS Explorer: refused a request: {textwrap.shorten(message, 300)}", file=sys.stderr)
        else:
            traceback.print_exc(*args, **kwargs)


class _NoBlockConfigs:
    """The app's ``Blocks`` as ``SessionState.__init__`` sees it in ``lean_session_state``: no block is in
    ``blocks``, the attribute whose only use there is to pick the blocks whose config is built up front."""

    blocks: dict = {}

    def __init__(self, blocks: gr.Blocks) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blocks, name)


_GRADIO_SESSION_INIT = state_holder.SessionState.__init__


def lean_session_state(self: state_holder.SessionState, blocks: gr.Blocks) -> None:
    """Gradio's ``SessionState.__init__``, without building every block's config when a session starts.

    Gradio builds the config of every block of this app (a few hundred) for every new session, on the event loop that
    serves everyone: a class whose first requests arrive within seconds would hold every request up. Those copies only
    serve deep links (``gr.DeepLinkButton``, which this app does not offer) and are otherwise made on demand
    (``SessionState._update_value_in_config`` builds a missing block's config when an answer changes it), so here they
    start empty.
    """
    _GRADIO_SESSION_INIT(self, _NoBlockConfigs(blocks))


def is_static_file(file_path: Any) -> bool:
    """Gradio's ``utils.is_static_file`` (is this file under a ``gr.set_static_paths`` folder?), resolving the file's
    path once instead of twice per static path.

    Gradio asks it for every file of every answer, twice (the answer and the session's copy of it), and its
    ``is_in_or_equal`` resolves both paths anew for each of the static paths (its own two icons, then the app's
    pictures folder): a repeated Compare's gallery pictures made hundreds of walks of ``os.path.realpath``, most of
    that request's server time (docs/classroom.md). The static paths are resolved already (``set_static_paths`` stores
    them so); the answer is the same.
    """
    from gradio.data_classes import FileData, _StaticFiles

    if isinstance(file_path, FileData):
        file_path = file_path.path
    if isinstance(file_path, str):
        file_path = Path(file_path)
        if not file_path.exists():
            return False
    if not isinstance(file_path, Path):
        return False
    resolved = utils.abspath(file_path).resolve()
    return any(resolved == folder or folder in resolved.parents for folder in _StaticFiles.all_paths)


PATIENCE_S = 60.0  # how long ``launch`` waits for its own just-started server to answer


def patient_url_ok(url: str, patience_s: float = PATIENCE_S) -> bool:
    """Gradio's ``networking.url_ok``, which ``launch`` asks whether the server it has just started answers, asking
    again until ``patience_s`` have passed.

    Gradio's gives up at the first ``HEAD`` that takes over 3 s (a timeout is not retried), and ``launch`` then
    refuses to serve ("When localhost is not accessible, a shareable link must be created"): on a loaded machine the
    app did not start at all.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            answer = httpx.head(url, timeout=3, verify=False)
            if answer.status_code in (200, 401, 301, 302, 303, 307, 308):  # Gradio's own list (auth, redirects)
                return True
        except (httpx.ConnectError, httpx.TimeoutException):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def installed() -> bool:
    """Whether ``install`` applied the workarounds in this process."""
    return bool(_installed and _installed[0])


def install(version: str = gr.__version__) -> bool:
    """Apply every workaround, once per process, when ``version`` (the installed Gradio's) is the minor version
    they were written for; otherwise change nothing and log why. Returns whether they are applied."""
    if _installed:
        return _installed[0]
    applies = ".".join(version.split(".")[:2]) == GRADIO_CHECKED
    if applies:
        processing_utils.save_pil_to_cache = save_pil_to_cache_atomically  # every component's pictures
        for module in (queueing, routes, utils):  # Gradio's refusals of bad input: one log line each
            module.traceback = QuietRefusals()
        state_holder.SessionState.__init__ = lean_session_state  # a session starts without every block's config
        utils.is_static_file = is_static_file  # one path resolution per file
        networking.url_ok = patient_url_ok  # launch waits for its server on a loaded machine
    else:
        _log.warning("Gradio %s is not %s, the release IPS Explorer's Gradio workarounds were written for; they are "
                     "left out (the app works without them, with Gradio's own behaviour)", version, GRADIO_CHECKED)
    _installed.append(applies)
    return applies
