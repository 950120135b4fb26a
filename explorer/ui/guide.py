"""Tab 6, Guide: the method in five steps with its formulas, a live example pair, and what each tab shows."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from explorer.analysis.claims import claims_heading, claims_markdown, gap_claims, teacher_phrase
from explorer.analysis.inputs import random_class_pair
from explorer.analysis.pairs import confidence_gaps, gap_statistics, swap_pair
from explorer.analysis.render import render_image
from explorer.analysis.schedules import evidence_markdown
from explorer.ips import default_patch_size
from explorer.training.config import TrainConfig
from explorer.training.measured import published
from explorer.ui.binding import flatten, model_handler
from explorer.ui.compare import model_claims, split_reports
from explorer.ui.context import LIGHT_EVENTS, AppContext
from explorer.ui.guide_field import FIELD
from explorer.ui.header import Header

__all__ = ["CLAIM_PAIRS", "TAB_ID", "GuideClaims", "GuideExample", "another_example", "build", "example",
           "first_example", "guide_claims", "refresh_claims", "refresh_open_claims"]

TAB_ID = "guide"
CLAIM_PAIRS = 500  # swapped test pairs behind the Guide's sentences about confidence gaps (seed 0, default patches)
_DEFAULTS = TrainConfig()  # the training CLI's defaults, which the text quotes
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

METHOD = r"""
## Intra-class patch swap (IPS) in five steps

IPS (Choi, Jeon, Shukla, Turaga, *Neurocomputing* 2025, [arXiv 2505.14124](https://arxiv.org/abs/2505.14124))
is self-distillation without a teacher network: one student, one augmentation, no extra parameters.

1. **Pair.** Every training image $x_a$ of class $y$ gets a random partner $x_b$ of the *same* class.
2. **Swap.** Both are cut into $m \times m$-pixel patches. A random set of $k = \mathrm{round}(r \cdot P)$ of the
   $P = \frac{H}{m}\cdot\frac{W}{m}$ patch positions is exchanged (mask $M$, 1 on exchanged pixels):
   $$\tilde x_a = M \odot x_b + (1 - M) \odot x_a, \qquad \tilde x_b = M \odot x_a + (1 - M) \odot x_b .$$
3. **Score.** The network predicts both views. Their confidences in the shared label differ:
   $c_a = \mathrm{softmax}(f(\tilde x_a))_y$, $c_b = \mathrm{softmax}(f(\tilde x_b))_y$.
   The more confident view is the **teacher** $t$, the other the **student** $s$.
4. **Distil.** Cross-entropy on both views plus the KL divergence from the (detached) teacher to the student at
   temperature $T$:
   $$\mathcal{L} = \tfrac12\big[\mathrm{CE}(f(\tilde x_a), y) + \mathrm{CE}(f(\tilde x_b), y)\big]
   + \lambda\, T^2\, \mathrm{KL}\big(\sigma(f(\tilde x_t)/T)\,\|\,\sigma(f(\tilde x_s)/T)\big).$$
   Training's defaults here: $T = TEMPERATURE$, $\lambda = KD_WEIGHT$ (the CS-KD convention; the paper leaves
   these open), ratio $r = SWAP_RATIO$, and a pair is swapped at all with probability SWAP_PROB.
5. **Test.** Nothing changes at test time: the same single network sees ordinary images. What training on
   swapped pairs changed is measured below, on the two models picked above.
"""

METHOD = (METHOD.replace("TEMPERATURE", f"{_DEFAULTS.temperature:g}").replace("KD_WEIGHT", f"{_DEFAULTS.kd_weight:g}")
          .replace("SWAP_RATIO", f"{_DEFAULTS.swap_ratio:g}").replace("SWAP_PROB", f"{_DEFAULTS.swap_prob:g}"))

MEASURED_TEXT = f"""
## What the project measured

The sentences above are about the two models picked. Across seeds, the project's studies (`python -m
explorer.study`; small_cnn; the paired difference in test-accuracy points with its 95 % interval; swap probability
1 swaps every pair, the training default before these studies chose 0.5) found:

{evidence_markdown()}

So IPS needs a long enough schedule, and its gain is small where there is one: a single pair of models can
show either sign. The Train tab's schedules say this beside their times.
"""

TABS = """
## What to look for in each tab

- **Patch swap** — the four images with the patch grid; outlined patches came from the other image. Which swapped
  view does each model trust more (marked **teacher**, or a **tie** when both are exactly as confident)? A large KL
  term means a strong lesson for this pair. Try a larger swap ratio or smaller patches: do the confidences drop?
- **Confidence gaps** — over many pairs: how far apart are the two swapped views' confidences under each model,
  and how often is a pair a tie? The numbers above say it for the models picked. Which classes have the largest
  gaps? Click a row to see the pair.
- **Grad-CAM** — where each model looks. On a swapped view, does the map follow the foreign patches?
- **Compare** — accuracy, NLL, ECE and Brier of A and B; the reliability diagram (points on the diagonal are
  well calibrated); the confusion matrices and their difference; the samples one model fixes and the other breaks.
- **Train** — train a baseline, CS-KD or IPS model in the background and watch its loss, KD term, accuracy and ECE
  beside the demo checkpoints' curves; "same settings, other method" trains the matching comparison. IPS needs a
  long enough schedule: compare methods with the "fair comparison" schedule, not the quick look. A
  finished run is offered in the model pickers above, so every other tab can look at it.

Everything here runs the same `patch_swap` and `ips_loss` functions that training uses (`explorer/ips.py`).
"""

class GuideExample(NamedTuple):
    """One answer of ``example`` (or its components): the pair, its swapped views, what each model makes of them."""

    a: Any
    b: Any
    a_swapped: Any
    b_swapped: Any
    text: Any


class GuideClaims(NamedTuple):
    """One answer of ``refresh_claims`` (or its components): the claims and the dataset and models they are about."""

    claims: Any
    shown: Any


GUIDE_PEERS = ("cross-entropy", "CS-KD", "PS-KD", "BYOT", "label smoothing", "CutMix", "MixSKD")


def peers_markdown(names: tuple[str, ...] = GUIDE_PEERS) -> str:
    """Self-KD-Lib's published CIFAR-100 figures for ``names``, as the measured-numbers file records them."""
    peers = published()["self-kd-lib"]
    return "\n".join([
        "### Peers, for orientation: published CIFAR-100 top-1 accuracy (%), ResNet-18", "",
        "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
        "| " + " | ".join(f"{peers['top1'][name]:.2f}" for name in names) + " |", "",
        f"{peers['source']} ({peers['protocol']}); the IPS paper reports beating these self-distillation baselines."])


PEERS = peers_markdown()


def example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
            rng: np.random.Generator) -> GuideExample:
    """A random same-class test pair, swapped with the default patch size and training's default ratio, scored:
    four images and a Markdown summary."""
    dataset = ctx.dataset(dataset_name)
    label, _, _, i, j = random_class_pair(dataset, rng)
    checkpoints = ctx.models(dataset, model_a, model_b)
    pair = swap_pair(dataset, dataset.test_images[i], dataset.test_images[j], label,
                     default_patch_size(dataset.image_size), _DEFAULTS.swap_ratio, int(rng.integers(1_000_000)),
                     {name: c.model for name, c in checkpoints.items()})
    lines = [f"Class **{dataset.class_names[label]}**, test images #{i} (a) and #{j} (b)."]
    lines += [f"- **{name}**: {teacher_phrase(s.swapped_a, s.swapped_b)}, KL·T² = {s.kd:.4f}"
              for name, s in pair.scores.items()]
    images = [render_image(img, pair.patch_size, pair.mask) for img in (*pair.originals, *pair.swapped)]
    return GuideExample(*images, "\n".join(lines))


def guide_claims(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> str:
    """What the method did to the models shown, generated from their numbers (Markdown): model B against model A
    over the test split (the Compare tab's claims) and over ``CLAIM_PAIRS`` swapped pairs (the gaps tab's)."""
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a, model_b)
    if len(checkpoints) != 2:
        return (f"Pick two models trained on {dataset.name} above (a baseline as A, an IPS model as B) to see what "
                "the method did to them, measured here.")
    reports = split_reports(ctx, dataset, checkpoints)
    methods = [str(c.card.get("method", "?")) for c in checkpoints.values()]
    gaps = confidence_gaps(dataset, {name: c.model for name, c in checkpoints.items()},
                           min(CLAIM_PAIRS, len(dataset.test_labels)), default_patch_size(dataset.image_size),
                           _DEFAULTS.swap_ratio, 0)
    stats = {name: gap_statistics(gaps.gap(name), gaps.labels, gaps.teacher_is_a[name], dataset.num_classes)
             for name in checkpoints}
    return claims_markdown(claims_heading(*methods, dataset.name),
                           [*model_claims(dataset, reports), *gap_claims(stats, len(gaps.anchors))])


def refresh_claims(ctx: AppContext, shown: list | None, dataset_name: str, model_a: str | None,
                   model_b: str | None) -> GuideClaims:
    """The tab opened: ``guide_claims`` unless they are shown for these dataset and models already."""
    if shown == [dataset_name, model_a, model_b]:
        return GuideClaims(gr.skip(), gr.skip())
    return GuideClaims(guide_claims(ctx, dataset_name, model_a, model_b), [dataset_name, model_a, model_b])


def refresh_open_claims(ctx: AppContext, tab_id: str, active: str | None, shown: list | None, dataset_name: str,
                        model_a: str | None, model_b: str | None) -> GuideClaims:
    """The header changed: ``refresh_claims`` when the Guide is the open tab, else nothing (it computes on opening)."""
    if active != tab_id:
        return GuideClaims(gr.skip(), gr.skip())
    return refresh_claims(ctx, shown, dataset_name, model_a, model_b)


def first_example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> GuideExample:
    """The same first example for everyone who opens the Guide."""
    return example(ctx, dataset_name, model_a, model_b, np.random.default_rng(0))


def another_example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> GuideExample:
    """A new random example."""
    return example(ctx, dataset_name, model_a, model_b, np.random.default_rng())


def build(ctx: AppContext, header: Header, demo: gr.Blocks, tab: gr.Tab, active: gr.State) -> None:
    """The tab; its sentences about the models are computed when it opens (and when the header changes then)."""
    gr.Markdown(METHOD, latex_delimiters=LATEX)
    with gr.Accordion("How IPS differs from label smoothing, CutMix, CS-KD and the rest of the field", open=False):
        gr.Markdown(FIELD, latex_delimiters=LATEX, elem_id="guide-field")
    gr.Markdown("## What it did here")
    claims = gr.Markdown("Open this tab to measure the models picked above.", elem_id="guide-claims")
    gr.Markdown(MEASURED_TEXT, elem_id="guide-measured")
    gr.Markdown("## A live example\nA random test pair of the chosen dataset, swapped with its default patch "
                f"size and ratio {_DEFAULTS.swap_ratio:g}, scored by model A and model B.")
    with gr.Row(equal_height=True, elem_id="guide-images"):
        pictures = [gr.Image(label=title, format="png", interactive=False, height=240, elem_classes="pixelated",
                             buttons=[]) for title in ("a", "b", "a′", "b′")]
    example_text = gr.Markdown(elem_id="guide-example")
    another = gr.Button("Another example")
    gr.Markdown(TABS)
    gr.Markdown(PEERS)
    shown = gr.State()  # the dataset and models the claims are about

    work = {**LIGHT_EVENTS, "trigger_mode": "always_last"}
    models = header.pickers
    shown_example = flatten(GuideExample(*pictures, example_text))
    shown_claims = flatten(GuideClaims(claims, shown))
    first = model_handler(ctx, first_example, small=True)
    gr.on([demo.load, *header.models_picked], first, models, shown_example, api_name="guide_first_example", **work)
    header.switched.then(first, models, shown_example, api_name="guide_dataset_example", **work)
    another.click(model_handler(ctx, another_example, small=True), models, shown_example, api_name="guide_example",
                  **work)
    tab.select(model_handler(ctx, refresh_claims), [shown, *models], shown_claims, api_name="guide_claims", **work)
    refresh_open = model_handler(ctx, refresh_open_claims, TAB_ID)
    gr.on(header.models_picked, refresh_open, [active, shown, *models], shown_claims, api_name="guide_claims_models",
          **work)
    header.switched.then(refresh_open, [active, shown, *models], shown_claims, api_name="guide_claims_dataset",
                         **work)
