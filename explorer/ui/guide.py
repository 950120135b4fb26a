"""Tab 6, Guide: the method in five steps with its formulas, a live example pair, and what each tab shows."""

from __future__ import annotations

import gradio as gr
import numpy as np

from explorer.analysis.inputs import random_class_pair
from explorer.analysis.pairs import swap_pair
from explorer.analysis.render import render_image
from explorer.ips import default_patch_size
from explorer.ui.common import LIGHT_EVENTS, AppContext, Header, model_handler

__all__ = ["TAB_ID", "another_example", "build", "example", "first_example"]

TAB_ID = "guide"
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
   Here $T = 4$ and $\lambda = 1$ (the CS-KD convention); the paper leaves these open.
5. **Test.** Nothing changes at test time: the same single network sees ordinary images. The swapped pairs
   taught it to give consistent, less over-confident predictions for partial class evidence.
"""

TABS = """
## What to look for in each tab

- **Patch swap** — the four images with the patch grid; outlined patches came from the other image. Which swapped
  view does each model trust more (marked **teacher**)? A large KL term means a strong lesson for this pair.
  Try a larger swap ratio or smaller patches and watch the confidences drop.
- **Confidence gaps** — over many pairs: a baseline that never saw swapped images tends to disagree strongly
  between the two views (large gaps); an IPS model has learnt to stay consistent. Which classes are hardest?
  Click a row to see the pair.
- **Grad-CAM** — where each model looks. On a swapped view, does the map follow the foreign patches?
- **Compare** — accuracy, NLL, ECE and Brier of A and B; the reliability diagram (points on the diagonal are
  well calibrated); the confusion matrices and their difference; the samples one model fixes and the other breaks.
- **Train** — train a baseline, CS-KD or IPS model in the background and watch its loss, KD term, accuracy and ECE
  beside the demo checkpoints' curves; "same settings, other method" trains the matching comparison. A finished run
  is offered in the model pickers above, so every other tab can look at it.

Everything here runs the same `patch_swap` and `ips_loss` functions that training uses (`explorer/ips.py`).
"""

PEERS = """
### Peers, for orientation: published CIFAR-100 top-1 accuracy (%), ResNet-18

| cross-entropy | CS-KD | PS-KD | BYOT | label smoothing | CutMix | MixSKD |
|---|---|---|---|---|---|---|
| 76.24 | 78.66 | 79.31 | 77.88 | 78.72 | 80.17 | 80.32 |

Self-KD-Lib's benchmark (200 epochs); the IPS paper reports beating these self-distillation baselines.
"""


def example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None,
            rng: np.random.Generator) -> tuple:
    """A random same-class test pair, swapped with the default patch size and ratio 0.5, scored: four images
    and a Markdown summary."""
    dataset = ctx.dataset(dataset_name)
    label, _, _, i, j = random_class_pair(dataset, rng)
    checkpoints = ctx.models(dataset, model_a, model_b)
    pair = swap_pair(dataset, dataset.test_images[i], dataset.test_images[j], label,
                     default_patch_size(dataset.image_size), 0.5, int(rng.integers(1_000_000)),
                     {name: c.model for name, c in checkpoints.items()})
    lines = [f"Class **{dataset.class_names[label]}**, test images #{i} and #{j}."]
    lines += [f"- **{name}**: confidence a′ {s.swapped_a:.3f}, b′ {s.swapped_b:.3f} → **{s.teacher}′ teaches**, "
              f"KL·T² = {s.kd:.4f}" for name, s in pair.scores.items()]
    images = [render_image(img, pair.patch_size, pair.mask) for img in (*pair.originals, *pair.swapped)]
    return (*images, "\n".join(lines))


def first_example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> tuple:
    """The same first example for everyone who opens the Guide."""
    return example(ctx, dataset_name, model_a, model_b, np.random.default_rng(0))


def another_example(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None) -> tuple:
    """A new random example."""
    return example(ctx, dataset_name, model_a, model_b, np.random.default_rng())


def build(ctx: AppContext, header: Header, demo: gr.Blocks) -> None:
    gr.Markdown(METHOD, latex_delimiters=LATEX)
    gr.Markdown("## A live example\nA random test pair of the chosen dataset, swapped with its default patch "
                "size and ratio 0.5, scored by model A and model B.")
    with gr.Row(equal_height=True, elem_id="guide-images"):
        pictures = [gr.Image(label=title, format="png", interactive=False, height=240, elem_classes="pixelated",
                             buttons=[]) for title in ("a", "b", "a′", "b′")]
    example_text = gr.Markdown(elem_id="guide-example")
    another = gr.Button("Another example")
    gr.Markdown(TABS)
    gr.Markdown(PEERS)

    work = LIGHT_EVENTS
    models = [header.dataset, header.model_a, header.model_b]
    demo.load(model_handler(ctx, first_example, small=True), models, [*pictures, example_text],
              api_name="guide_first_example", **work)
    another.click(model_handler(ctx, another_example, small=True), models, [*pictures, example_text],
                  api_name="guide_example", **work)
