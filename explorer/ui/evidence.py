"""Patch evidence in the app: which patch positions decide the teacher (``explorer.analysis.evidence``).

Two sections, each built by the tab it belongs to:

- in the Patch swap tab (``build_swap_section``), for the shown pair and models A and B: the change of each
  image's true-class confidence when one patch position alone comes from the other image, as heat maps over
  both images; the summed evidence of the exchanged positions beside the teacher the model chooses; and a
  control that exchanges the k most or k least evident positions instead of the swap's random ones, so the
  teacher flips to a′ or to b′. It follows the tab's pair (the tab's state: the swapped views and the mask,
  from which the originals are swapped back), so it is redrawn whenever the tab shows another pair or model.
- in the Confidence gaps tab (``build_gaps_section``): over the tab's pairs, how often the summed evidence picks
  the teacher the model chooses, as a rate with its counts. Scoring every position of hundreds of pairs takes
  seconds to minutes, so it runs in the heavy lane on private model copies and its answer is cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import torch

from explorer.analysis.catalog import checkpoint_name
from explorer.analysis.evidence import check_teacher, evidence_agreement, evident_mask, patch_evidence
from explorer.analysis.figures import patch_evidence_maps
from explorer.analysis.inputs import class_label, seed_number, whole_number
from explorer.analysis.payloads import evidence_agreement_summary, evidence_table, patch_evidence_payload
from explorer.analysis.render import to_rgb
from explorer.checkpoints import Checkpoint
from explorer.data import Dataset
from explorer.ips import swap_patches
from explorer.ui.binding import flatten, heavy_handler, model_handler
from explorer.ui.components import result_views, typed_values_js
from explorer.ui.context import LIGHT_EVENTS, AppContext
from explorer.ui.header import Header
from explorer.ui.heavy import HEAVY_EVENTS

__all__ = ["EXCHANGES", "AgreementView", "EvidenceView", "build_gaps_section", "build_swap_section",
           "evidence_agreement_view", "patch_evidence_view"]

EXCHANGES = ("the swap's random positions", "the k most evident (towards a′)", "the k least evident (towards b′)")


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------
class EvidenceView(NamedTuple):
    """The Patch swap tab's evidence section: one answer of ``patch_evidence_view`` (or its components)."""

    maps: Any  # the heat maps (a figure; None when no model is chosen)
    table: Any  # the summed evidence vs the model's teacher
    summary: Any
    data: Any  # the JSON of /patch_evidence
    k: Any  # the k slider: the k drawn, at most the pair's grid; only to be set when the exchange uses it
    asked_k: Any  # a state: the k the person chose, kept while a coarser grid holds the slider lower


class AgreementView(NamedTuple):
    """The Gaps tab's evidence section: one answer of ``evidence_agreement_view`` (or its components)."""

    summary: Any
    data: Any  # the JSON of /evidence_agreement


def _originals(pair: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images a and b of the Patch swap tab's state: its swapped views, swapped back at its mask."""
    swapped, mask = torch.from_numpy(pair["swapped"]), torch.from_numpy(pair["mask"])
    a, b = swap_patches(swapped[:1], swapped[1:], mask[None])
    return a[0], b[0]


def patch_evidence_view(ctx: AppContext, model_a: str | None, model_b: str | None, pair: dict[str, Any] | None,
                        exchange: str, k: float) -> EvidenceView:
    """Heat maps, the teacher table, a summary, the JSON (/patch_evidence) and the k slider fitted to the grid;
    without a model, an empty view that says so (a dataset without checkpoints is a normal state, not an error).

    ``k`` is the k the person chose (the slider's value, or ``asked_k`` when another pair or exchange redraws):
    a 1x1 grid draws k = 1, and going back to a finer grid draws the chosen k again, not 1.
    """
    if not pair:
        raise ValueError("no pair yet: show one in the Patch swap tab first")
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}; got {exchange!r}")
    dataset = ctx.dataset(pair["dataset"])
    checkpoints = ctx.models(dataset, model_a, model_b)
    label, size, random_mask = int(pair["label"]), int(pair["patch_size"]), torch.from_numpy(pair["mask"])
    cells = random_mask.numel()
    asked = max(whole_number(k, "k"), 0)
    count = min(asked, cells)
    slider = gr.Slider(maximum=cells, value=count, interactive=exchange != EXCHANGES[0])
    if not checkpoints:
        return EvidenceView(None, pd.DataFrame(evidence_table({})),
                            f"Class **{dataset.class_names[label]}**, {size}x{size}-pixel patches. No model chosen: "
                            f"pick model A or B above (checkpoints trained on {dataset.name}) to see which patch "
                            "positions decide the teacher.",
                            patch_evidence_payload(dataset, label, {}, {}, exchange, {}), slider, asked)
    image_a, image_b = _originals(pair)
    evidence, checks = {}, {}
    for name, checkpoint in checkpoints.items():
        evidence[name] = patch_evidence(checkpoint.model, dataset, image_a, image_b, label, size)
        mask = (random_mask if exchange == EXCHANGES[0] else
                evident_mask(evidence[name], count, most=exchange == EXCHANGES[1]))
        checks[name] = check_teacher(checkpoint.model, dataset, evidence[name], mask)
    figure = patch_evidence_maps(to_rgb(image_a), to_rgb(image_b),
                                 {name: (e.delta_a.numpy(), e.delta_b.numpy(), checks[name].mask.numpy())
                                  for name, e in evidence.items()}, size)
    chosen = (f"the swap's {int(random_mask.sum())} random positions" if exchange == EXCHANGES[0] else
              f"each model's {count} {'most' if exchange == EXCHANGES[1] else 'least'} evident positions")
    summary = (f"Class **{dataset.class_names[label]}**, {size}x{size}-pixel patches; exchanged: {chosen}. "
               "Red: the image's true-class confidence rises when that one patch comes from the other image; blue: "
               "it falls. The sums over the exchanged positions predict each swapped view's confidence (to first "
               "order, patches taken as independent); the model's own choice comes from the real swapped views.")
    payload = patch_evidence_payload(dataset, label, evidence, checks, exchange, checkpoints)
    return EvidenceView(figure, pd.DataFrame(evidence_table(checks)), summary, payload, slider, asked)


def _agreement(ctx: AppContext, checkpoint: dict[str, Checkpoint], dataset: Dataset, settings: tuple,
               progress: Callable[[float], None]) -> Any:
    """``evidence_agreement`` of one model (a private copy: this runs in the heavy lane, beside model work)."""
    (model,) = ctx.private_models(checkpoint).values()
    return evidence_agreement(model, dataset, *settings, progress=progress)


def evidence_agreement_view(ctx: AppContext, model_sets: tuple[str, str, str], all_classes: str, dataset_name: str,
                            model_a: str | None, model_b: str | None, models: str, class_name: str, n_pairs: float,
                            patch_size: int, swap_ratio: float, seed: float,
                            progress=gr.Progress()) -> AgreementView:  # noqa: B008 (Gradio injects it)
    """Over the Gaps tab's pairs: how often the summed evidence predicts each model's teacher (/evidence_agreement).

    ``model_sets`` and ``all_classes`` are the Gaps tab's choices ("A and B", "A only", "B only"; every class).
    """
    if models not in model_sets:
        raise ValueError(f"models must be one of {model_sets}; got {models!r}")
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, None if models == model_sets[2] else model_a,
                             None if models == model_sets[1] else model_b)
    if not checkpoints:
        raise ValueError("choose a checkpoint for the model(s) to look at")
    label = None if class_name == all_classes else class_label(dataset, class_name)
    settings = (dataset.name, whole_number(n_pairs, "number of pairs"), whole_number(patch_size, "patch size"),
                float(swap_ratio), seed_number(seed), label)
    results = {}
    for i, (name, checkpoint) in enumerate(checkpoints.items()):
        desc = f"{name}: every patch position of {settings[1]} pairs"
        progress(i / len(checkpoints), desc=desc)
        compute = functools.partial(_agreement, ctx, {name: checkpoint}, dataset, settings[1:],
                                    lambda f, i=i, desc=desc: progress((i + f) / len(checkpoints), desc=desc))
        results[name] = ctx.analysis("evidence_agreement", {name: checkpoint}, settings, compute)
    text = (f"**Does the summed patch evidence predict the teacher?** Over {settings[1]} pairs ({settings[2]}-pixel "
            f"patches, ratio {settings[3]:g}, seed {settings[4]}): how often the view with the higher summed "
            f"evidence is the view the model makes the teacher.\n" + evidence_agreement_summary(results))
    return AgreementView(text, {"dataset": dataset.name, "n_pairs": settings[1], "patch_size": settings[2],
                                "swap_ratio": settings[3], "seed": settings[4], "class": class_name,
                                "models": {name: {"checkpoint": checkpoint_name(checkpoints[name].path), **r.to_json()}
                                           for name, r in results.items()}})


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
def build_swap_section(ctx: AppContext, header: Header, pair: gr.State) -> None:
    """The Patch swap tab's evidence section; ``pair`` is the tab's state of the shown pair."""
    gr.Markdown("### Patch evidence: which patches decide the teacher\nEach patch position is exchanged on its "
                "own, and each model's true-class confidence of a and of b is measured again.")
    with gr.Row(equal_height=True):
        exchange = gr.Radio(list(EXCHANGES), value=EXCHANGES[0], label="Exchange", scale=3,
                            info="most evident: the positions that favour a′ most; least evident: b′")
        k = gr.Slider(0, 16, value=8, step=1, label="k positions", scale=1, elem_id="evidence-k", interactive=False,
                      info="used by the most and least evident exchanges", buttons=[])  # no ↺: no redraw
    asked_k = gr.State(8)
    summary, table, maps, data = result_views(
        "evidence", "summed evidence of the exchanged positions vs the teacher the model chooses", "patch evidence",
        "patch_evidence", plot_id="evidence-maps")
    outputs = flatten(EvidenceView(maps, table, summary, data, k, asked_k))
    show = model_handler(ctx, patch_evidence_view, small=True)
    inputs = [header.model_a, header.model_b, pair, exchange, k]
    k.input(show, inputs, outputs, api_name="patch_evidence", js=typed_values_js(inputs), trigger_mode="always_last",
            **LIGHT_EVENTS)
    gr.on([pair.change, exchange.input], show, [*inputs[:-1], asked_k], outputs, api_name="patch_evidence_redraw",
          trigger_mode="always_last", **LIGHT_EVENTS)


def build_gaps_section(ctx: AppContext, header: Header, controls: list[gr.components.Component],
                       model_sets: tuple[str, str, str], all_classes: str) -> None:
    """The Confidence gaps tab's evidence rate; ``controls`` are the tab's models, class, N, patch size, ratio and
    seed, and ``model_sets`` and ``all_classes`` the values its model and class pickers offer."""
    with gr.Row(equal_height=True):
        run = gr.Button("Does the summed patch evidence predict the teacher?", scale=1)
        summary = gr.Markdown(elem_id="evidence-agreement", container=True)
    with gr.Accordion("The evidence per pair (JSON, as the API returns it)", open=False):
        data = gr.JSON(label="evidence_agreement")
    run.click(heavy_handler(ctx, evidence_agreement_view, model_sets, all_classes),
              [header.dataset, header.model_a, header.model_b, *controls], flatten(AgreementView(summary, data)),
              api_name="evidence_agreement", **HEAVY_EVENTS)
