"""CAM faithfulness in the Grad-CAM tab: are model A's or model B's maps the more faithful, and by how much?

For the tab's CAM method and layer and N random test images (``explorer.analysis.faithfulness``): ROAD
most- and least-relevant-first at each percentile, ROAD combined and the CAM-mult confidence change, per
model with 95 % intervals over the images, the paired difference B − A and one sentence that claims only what
its interval allows. Then, on swapped views: the share of each model's CAM mass on the swapped-in (foreign)
patches, over N of the Gaps tab's test pairs at the dataset's default patch size and swap ratio 0.5 (the
training defaults), beside the swapped-in area a map blind to the swap would give.

N = 200 takes tens of seconds (the package's ROAD imputer solves a sparse system per image and percentile), so
the work runs in the heavy lane on private copies of the models, reports its progress, and its answer is
cached per inputs and checkpoint weights version: asking again is instant.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from explorer.analysis.cam import CAM_METHODS
from explorer.analysis.faithfulness import (
    DEFAULT_PERCENTILES,
    FaithfulnessComparison,
    ForeignCamMass,
    compare_faithfulness,
    foreign_cam_mass,
)
from explorer.analysis.figures import faithfulness_figure
from explorer.analysis.inputs import seed_number, whole_number
from explorer.analysis.payloads import faithfulness_payload, faithfulness_table, foreign_share_difference
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.ips import default_patch_size
from explorer.stats import comparison_sentence
from explorer.ui.binding import flatten, heavy_handler
from explorer.ui.components import result_views
from explorer.ui.context import AppContext
from explorer.ui.header import Header
from explorer.ui.heavy import HEAVY_EVENTS

__all__ = ["DEFAULT_IMAGES", "SWAP_RATIO", "FaithfulnessView", "build_section", "cam_faithfulness_view"]

DEFAULT_IMAGES = 200
SWAP_RATIO = 0.5  # of the swapped views whose foreign CAM mass is measured: the training default


class FaithfulnessView(NamedTuple):
    """One answer of ``cam_faithfulness_view`` (or its components)."""

    summary: Any  # the sentences
    table: Any
    figure: Any
    data: Any  # the JSON of /cam_faithfulness


def _measure(ctx: AppContext, checkpoints: dict[str, Checkpoint], dataset: Dataset, method: str, layer: str | None,
             n_images: int, seed: int, patch_size: int,
             progress: Any) -> tuple[FaithfulnessComparison, dict[str, ForeignCamMass]]:
    """ROAD and CAM-mult of both models (85 % of the progress bar), then their CAM mass on swapped-in patches."""
    models = ctx.private_models(checkpoints)
    comparison = compare_faithfulness(models, dataset, n_images, method, layer, DEFAULT_PERCENTILES, seed,
                                      progress=lambda f: progress(0.85 * f, desc=f"ROAD and CAM-mult: {n_images} "
                                                                                  "test images per model"))
    progress(0.85, desc="CAM mass on swapped-in patches")
    foreign = {name: foreign_cam_mass(model, dataset, n_images, patch_size, SWAP_RATIO, seed, method, layer)
               for name, model in models.items()}
    return comparison, foreign


def _foreign_sentence(foreign: dict[str, ForeignCamMass], names: tuple[str, str]) -> str:
    """Each model's CAM share on swapped-in patches and the paired difference, saying how many of the pairs asked
    for were left out (a map that is all zero has no mass to share), so "11 pairs" of N = 20 is explained."""
    name_a, name_b = names
    area = foreign[name_a].foreign_area
    shares = ", ".join(f"{name} **{m.summary().mean:.3f}**" for name, m in foreign.items())
    difference = foreign_share_difference(foreign[name_a], foreign[name_b])
    asked = len(foreign[name_a].pair_share)
    left_out = asked - difference.n
    note = "" if not left_out else (
        f" {left_out} of the {asked} pairs are left out: a map of one of their views is all zero, so it has no mass "
        "to share (" + ", ".join(f"{name}: {m.empty_pairs}" for name, m in foreign.items()) + ").")
    return (f"CAM share on the swapped-in patches ({100 * area:.0f} % of the pixels; a map blind to the swap puts "
            f"about that share there): {shares}. " +
            comparison_sentence(difference, name_b, name_a, "on this share", unit="", noun="pair", digits=3) + note)


def cam_faithfulness_view(ctx: AppContext, default_layer: str, dataset_name: str, model_a: str | None,
                          model_b: str | None, method: str, layer: str, n_images: float, seed: float,
                          progress=gr.Progress()) -> FaithfulnessView:  # noqa: B008 (Gradio injects it)
    """The sentences, the table, the figure and the JSON (/cam_faithfulness) of models A and B.

    ``default_layer`` is the Grad-CAM tab's choice "each model's default" layer.
    """
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a, model_b)
    if len(checkpoints) != 2:
        raise ValueError("choose two checkpoints, model A and model B, to compare their maps")
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    count, seed_int = whole_number(n_images, "number of images"), seed_number(seed)
    if not 2 <= count <= len(dataset.test_labels):
        raise ValueError(f"the number of images must be between 2 and the {len(dataset.test_labels)} test images of "
                         f"{dataset.name}; got {count}")
    layer_name = None if layer == default_layer else layer
    patch_size = default_patch_size(dataset.image_size)
    settings = (dataset.name, method, layer_name, count, seed_int, patch_size)
    comparison, foreign = ctx.analysis("cam_faithfulness", checkpoints, settings, lambda: _measure(
        ctx, checkpoints, dataset, method, layer_name, count, seed_int, patch_size, progress))
    text = (f"**{count} test images**, {method} maps of the true class. {comparison.sentence()}\n\n"
            + _foreign_sentence(foreign, comparison.names))
    payload = faithfulness_payload(dataset, comparison, foreign, checkpoints, {
        "n_images": count, "seed": seed_int, "percentiles": list(DEFAULT_PERCENTILES), "patch_size": patch_size,
        "swap_ratio": SWAP_RATIO})
    return FaithfulnessView(text, pd.DataFrame(faithfulness_table(comparison, foreign)),
                            faithfulness_figure({comparison.names[0]: comparison.a, comparison.names[1]: comparison.b},
                                                foreign), payload)


def build_section(ctx: AppContext, header: Header, method: gr.Dropdown, layer: gr.Dropdown, default_layer: str) -> None:
    """The Grad-CAM tab's faithfulness section, for the tab's ``method`` and ``layer`` pickers."""
    gr.Markdown("### Are the maps faithful?\nA faithful map marks what the prediction depends on. **ROAD** (Rong et "
                "al., 2022) imputes the pixels the map ranks highest (*most relevant first*: a faithful map makes the "
                "true-class probability drop most) or lowest (*least relevant first*: it should barely move); "
                "**ROAD combined** = (LeRF − MoRF) / 2, higher is more faithful. **CAM-mult** keeps only what the "
                "map shows. Metrics from the grad-cam package, on the same random test images for both models.")
    with gr.Row(equal_height=True):
        n_images = gr.Slider(10, 1000, value=DEFAULT_IMAGES, step=10, label="Test images N", scale=2,
                             info="also the number of swapped pairs", elem_id="faithfulness-n")
        seed = gr.Number(0, precision=0, label="Seed", scale=1, info="the images, the pairs, the imputation noise",
                         elem_id="faithfulness-seed")
        run = gr.Button("Measure the faithfulness of A's and B's maps", variant="primary", scale=2)
    summary, table, figure, data = result_views(
        "faithfulness", "true-class probability change, mean (95 % CI); B − A paired per image", "CAM faithfulness",
        "cam_faithfulness")
    run.click(heavy_handler(ctx, cam_faithfulness_view, default_layer),
              [header.dataset, header.model_a, header.model_b, method, layer, n_images, seed],
              flatten(FaithfulnessView(summary, table, figure, data)), api_name="cam_faithfulness", **HEAVY_EVENTS)
