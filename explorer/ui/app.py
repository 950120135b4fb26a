"""The whole web app: the header pickers, then one tab per module. ``app.py`` launches what this builds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

from explorer.device import resolve_device
from explorer.training.runs import RunManager
from explorer.ui import compare, gaps, gradcam, guide, study, swap, train
from explorer.ui.common import AppContext, build_header

__all__ = ["CSS", "build_app", "save_pil_to_cache_atomically"]

# Pixel images stay pixel-sharp when the browser scales them; captions read as captions.
CSS = """
.pixelated img { image-rendering: pixelated; }
.caption { font-size: 0.92em; line-height: 1.35; }
"""


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


def build_app(runs: RunManager, checkpoints_dir: str | Path = "checkpoints", device: str = "auto") -> gr.Blocks:
    """The Blocks of the app: checkpoints from ``checkpoints_dir`` and every run folder of ``runs``.

    The caller owns the run manager (it starts and watches training processes): it creates one per app and
    closes it when the app stops, which a ``gr.Blocks`` has no hook for.
    """
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically  # every component's pictures (see there)
    ctx = AppContext(runs.runs_dir, Path(checkpoints_dir), resolve_device(device))
    with gr.Blocks(title="IPS Explorer", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False)
        gr.Markdown("# IPS Explorer\nIntra-class patch swap self-distillation: what the swap does to images, to "
                    "a model's confidence, and how a baseline and an IPS model differ. Pick the dataset and the two "
                    "models here; every tab uses them.")
        header = build_header(ctx)
        with gr.Tabs() as tabs:
            with gr.Tab("Patch swap", id=swap.TAB_ID):
                swap_tab = swap.build(ctx, header, demo)
            with gr.Tab("Confidence gaps", id=gaps.TAB_ID):
                gaps.build(ctx, header, swap_tab, tabs)
            with gr.Tab("Grad-CAM", id=gradcam.TAB_ID):
                gradcam_tab = gradcam.build(ctx, header, swap_tab, demo)
            with gr.Tab("Compare", id=compare.TAB_ID):
                compare.build(ctx, header, gradcam_tab, tabs)
            with gr.Tab("Train", id=train.TAB_ID) as train_tab:
                train.build(ctx, runs, train_tab)
            with gr.Tab("Study", id=study.TAB_ID) as study_tab:
                study.build(runs, study_tab)
            with gr.Tab("Guide", id=guide.TAB_ID):
                guide.build(ctx, header, demo)
    return demo
