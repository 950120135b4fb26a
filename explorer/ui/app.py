"""The whole web app: the header pickers, then one tab per module. ``app.py`` launches what this builds."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from explorer.device import resolve_device
from explorer.training.runs import RunManager
from explorer.ui import compare, gaps, gradcam, gradio_patches, guide, study, swap, train, transfer
from explorer.ui.binding import handler
from explorer.ui.context import AppContext
from explorer.ui.header import build_header

__all__ = ["CSS", "PRESENT_ON_LOAD_JS", "PRESENT_TOGGLE_JS", "build_app", "opened"]

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


def build_app(runs: RunManager, checkpoints_dir: str | Path = "checkpoints", device: str = "auto") -> gr.Blocks:
    """The Blocks of the app: checkpoints from ``checkpoints_dir`` and every run folder of ``runs``.

    The caller owns the run manager (it starts and watches training processes): it creates one per app and
    closes it when the app stops, which a ``gr.Blocks`` has no hook for.
    """
    gradio_patches.install()
    ctx = AppContext(runs.runs_dir, Path(checkpoints_dir), resolve_device(device))
    # The cached answers' pictures (``binding.sendable``) are served from where they are, not checked and copied
    # into Gradio's cache on every answer.
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
            with gr.Tab("Transfer", id=transfer.TAB_ID) as transfer_tab:
                transfer.build(ctx, runs, transfer_tab)
            with gr.Tab("Guide", id=guide.TAB_ID) as guide_tab:
                guide.build(ctx, header, demo, guide_tab, active)
        for block, tab_id in ((swap_tab_block, swap.TAB_ID), (gaps_tab, gaps.TAB_ID),
                              (gradcam_tab_block, gradcam.TAB_ID), (compare_tab, compare.TAB_ID),
                              (train_tab, train.TAB_ID), (study_tab, study.TAB_ID), (transfer_tab, transfer.TAB_ID),
                              (guide_tab, guide.TAB_ID)):
            block.select(handler(opened, tab_id), None, active, queue=False, show_progress="hidden",
                         api_visibility="private")
        demo.load(None, None, present, js=PRESENT_ON_LOAD_JS, queue=False)
        present.change(None, present, None, js=PRESENT_TOGGLE_JS, queue=False)
    return demo
