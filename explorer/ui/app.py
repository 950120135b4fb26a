"""The whole web app: the header pickers, then one tab per module. ``app.py`` launches what this builds."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import gradio as gr
from gradio import exceptions, processing_utils, queueing, routes, state_holder, utils
from PIL import Image

from explorer.device import resolve_device
from explorer.training.runs import RunManager
from explorer.ui import compare, gaps, gradcam, guide, study, swap, train
from explorer.ui.common import AppContext, handler
from explorer.ui.header import build_header

__all__ = ["CSS", "PRESENT_ON_LOAD_JS", "PRESENT_TOGGLE_JS", "QuietRefusals", "build_app", "is_static_file",
           "lean_session_state", "opened", "save_pil_to_cache_atomically"]

# Pixel images stay pixel-sharp when the browser scales them; captions read as captions.
# Presentation mode (``body.present``, for a projector at 1024x768): what only the presenter needs is hidden
# (``present-hide``: the introductions, the dataset and model pickers), and the Patch swap tab shows its four
# pictures and its summary first (``swap-pictures``, a flex order), its controls below them, in larger type.
CSS = """
.pixelated img { image-rendering: pixelated; }
.caption { font-size: 0.92em; line-height: 1.35; }
body.present .present-hide { display: none !important; }
body.present .swap-pictures { order: -2; }
body.present #swap-summary { order: -1; font-size: 1.2em; }
body.present .caption { font-size: 1.15em; }
body.present h1 { font-size: 1.4em; margin: 0; }
body.present [role=tab] { font-size: 1.1em; }
"""
# Presentation mode lives in the browser only (nothing to compute): the toggle sets the body's class and keeps
# ``?present=1`` in the address, so a reload or a shared link opens the page the same way.
PRESENT_ON_LOAD_JS = "() => new URLSearchParams(window.location.search).get('present') === '1'"
PRESENT_TOGGLE_JS = """(on) => {
    document.body.classList.toggle('present', on);
    const url = new URL(window.location.href);
    if (on) { url.searchParams.set('present', '1'); } else { url.searchParams.delete('present'); }
    window.history.replaceState(null, '', url);
}"""


def opened(tab_id: str) -> str:
    """A tab was opened: it is the active one (tabs that compute on opening redraw on header changes only then)."""
    return tab_id


def save_pil_to_cache_atomically(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, written atomically and only once per content.

    Gradio 6.31 names a picture's cache file by the hash of its bytes and rewrites that file in place on every
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
    tracebacks of nothing wrong. A refusal (``gradio.Error``, ``ComponentProcessingError``) is logged as one line
    of at most 300 characters; any other exception, a bug, keeps its full traceback. The app's own refusals print
    nothing (``common.handler`` raises them with ``print_exception=False``).
    """

    REFUSALS = (exceptions.Error, exceptions.ComponentProcessingError)

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

    Gradio 6.31 builds the config of all ~260 blocks of this app for every new session (60 ms here, idle), on the
    event loop that serves everyone: a class of 30 whose first requests arrive within seconds
    held every request up for 2-4 s. Those copies only serve deep links (``gr.DeepLinkButton``, which this app
    does not offer) and are otherwise made on demand (``SessionState._update_value_in_config`` builds a missing
    block's config when an answer changes it), so here they start empty.
    """
    _GRADIO_SESSION_INIT(self, _NoBlockConfigs(blocks))


def is_static_file(file_path: Any) -> bool:
    """Gradio's ``utils.is_static_file`` (is this file under a ``gr.set_static_paths`` folder?), resolving the file's
    path once instead of twice per static path.

    Gradio 6.31 asks it for every file of every answer, twice (the answer and the session's copy of it), and its
    ``is_in_or_equal`` resolves both paths anew for each of the static paths (its own two icons, then the app's
    pictures folder): the 18 gallery pictures of a repeated Compare made 216 walks of ``os.path.realpath``, 70 % of
    that request's server time (py-spy). The static paths are resolved already (``set_static_paths`` stores them
    so); the answer is the same.
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


def build_app(runs: RunManager, checkpoints_dir: str | Path = "checkpoints", device: str = "auto") -> gr.Blocks:
    """The Blocks of the app: checkpoints from ``checkpoints_dir`` and every run folder of ``runs``.

    The caller owns the run manager (it starts and watches training processes): it creates one per app and
    closes it when the app stops, which a ``gr.Blocks`` has no hook for.
    """
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically  # every component's pictures (see there)
    for module in (queueing, routes, utils):  # Gradio's refusals of bad input: one log line each (see there)
        module.traceback = QuietRefusals()
    state_holder.SessionState.__init__ = lean_session_state  # a session starts without 260 block configs
    utils.is_static_file = is_static_file  # one path resolution per file, not six (see there)
    ctx = AppContext(runs.runs_dir, Path(checkpoints_dir), resolve_device(device))
    # The cached answers' pictures (``common.sendable``) are served from where they are, not checked and copied
    # into Gradio's cache on every answer (18 files twice per repeated Compare: about 40 of its 71-78 ms).
    gr.set_static_paths([ctx.pictures.name])
    with gr.Blocks(title="IPS Explorer", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False)
        with gr.Row(equal_height=True):
            gr.Markdown("# IPS Explorer", scale=4)
            present = gr.Checkbox(label="Presentation mode", info="for a projector: pictures first, larger type "
                                  "(or open the page with ?present=1)", elem_id="present-toggle", scale=1)
        gr.Markdown("Intra-class patch swap self-distillation: what the swap does to images, to "
                    "a model's confidence, and how a baseline and an IPS model differ. Pick the dataset and the two "
                    "models here, in any order; every tab uses them, and the model lists follow the dataset.",
                    elem_classes="present-hide")
        with gr.Column(elem_classes="present-hide"):
            header = build_header(ctx)
        active = gr.State(swap.TAB_ID)  # the open tab
        with gr.Tabs() as tabs:
            with gr.Tab("Patch swap", id=swap.TAB_ID) as swap_tab_block:
                swap_tab = swap.build(ctx, header, demo)
            with gr.Tab("Confidence gaps", id=gaps.TAB_ID) as gaps_tab:
                gaps.build(ctx, header, swap_tab, tabs, gaps_tab, active)
            with gr.Tab("Grad-CAM", id=gradcam.TAB_ID) as gradcam_tab_block:
                gradcam_tab = gradcam.build(ctx, header, swap_tab, demo)
            with gr.Tab("Compare", id=compare.TAB_ID) as compare_tab:
                compare.build(ctx, header, gradcam_tab, tabs, compare_tab, active)
            with gr.Tab("Train", id=train.TAB_ID) as train_tab:
                train.build(ctx, runs, train_tab, header, tabs)
            with gr.Tab("Study", id=study.TAB_ID) as study_tab:
                study.build(runs, study_tab)
            with gr.Tab("Guide", id=guide.TAB_ID) as guide_tab:
                guide.build(ctx, header, demo, guide_tab, active)
        for block, tab_id in ((swap_tab_block, swap.TAB_ID), (gaps_tab, gaps.TAB_ID),
                              (gradcam_tab_block, gradcam.TAB_ID), (compare_tab, compare.TAB_ID),
                              (train_tab, train.TAB_ID), (study_tab, study.TAB_ID), (guide_tab, guide.TAB_ID)):
            block.select(handler(opened, tab_id), None, active, queue=False, show_progress="hidden",
                         api_visibility="private")
        demo.load(None, None, present, js=PRESENT_ON_LOAD_JS, queue=False)
        present.change(None, present, None, js=PRESENT_TOGGLE_JS, queue=False)
    return demo
