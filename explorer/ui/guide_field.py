"""The Guide's paragraph on the self-distillation field: each method of the registry in a sentence and a formula,
told against IPS, so that a teacher can say how IPS differs from label smoothing, CutMix or CS-KD.

The hyper-parameters quoted are the registry's (``explorer.training.methods``), never repeated by hand.
"""

from __future__ import annotations

from explorer.training.methods import (
    BAKE_IMAGES,
    BAKE_OMEGA,
    CUTMIX_ALPHA,
    DLB_TEMPERATURE,
    LS_EPSILON,
    MIXUP_ALPHA,
    PSKD_ALPHA_T,
    ZIPF_WEIGHT,
)

__all__ = ["FIELD"]

FIELD = rf"""
## IPS and the self-distillation field

Every method below trains the same single network on the same data loop (`--method NAME`); only the targets, the
inputs or the second view differ. $p = \sigma(f(x))$ is the model's softmax, $y$ the one-hot label, $K$ the class
count, $\mathrm{{KL}}_T$ the KL divergence between softmaxes at temperature $T$, times $T^2$.

- **Label smoothing** (`ls`) softens the *label* the same way for every image, whatever the image looks like:
  $\mathcal{{L}} = \mathrm{{CE}}\big(p, (1-\varepsilon)\,y + \tfrac{{\varepsilon}}{{K-1}}(1-y)\big)$,
  $\varepsilon = {LS_EPSILON}$.
  IPS's soft target instead comes from the network's own prediction on a same-class view, so it differs per image.
- **Mixup** (`mixup`) blends two images of *any* classes and their labels:
  $\tilde x = \lambda x_i + (1-\lambda) x_j$,
  $\mathcal{{L}} = \lambda\,\mathrm{{CE}}(p, y_i) + (1-\lambda)\,\mathrm{{CE}}(p, y_j)$,
  $\lambda \sim \mathrm{{Beta}}({MIXUP_ALPHA}, {MIXUP_ALPHA})$.
- **CutMix** (`cutmix`) pastes one box from another image and mixes the labels by area:
  $\tilde x = M \odot x_j + (1-M) \odot x_i$, the same loss with $\lambda$ = the uncovered share,
  $\lambda \sim \mathrm{{Beta}}({CUTMIX_ALPHA}, {CUTMIX_ALPHA})$. IPS also pastes patches, but between two images of
  the *same* class, so the label stays; what it learns from is the gap in confidence between the two views.
- **CS-KD** (`cskd`) distils a same-class partner's prediction into the anchor, without a swap:
  $\mathrm{{CE}}(f(x_a), y) + \lambda\,\mathrm{{KL}}_T\big(\sigma(f(x_b)/T)\,\|\,\sigma(f(x_a)/T)\big)$. IPS keeps the
  same-class pair but swaps patches first and lets the *more confident* view teach.
- **Tf-KD (reg)** (`tfkd`) distils a hand-made teacher: 0.99 on the true class, the rest uniform, softened at
  $T = 20$: $0.9\,\mathrm{{CE}}(p, y) + 0.1 \cdot 100 \cdot \mathrm{{KL}}(q_{{\text{{hand}}}} \,\|\, p)$
  (KL averaged over the
  $N \times K$ entries, as its code).
- **PS-KD** (`pskd`) uses the network's own prediction of the same image from the *last epoch*:
  $\mathrm{{CE}}\big(p, (1-\alpha_t)\,y + \alpha_t\,p^{{\text{{last epoch}}}}(x)\big)$,
  $\alpha_t = {PSKD_ALPHA_T}\cdot t/E$.
- **DLB** (`dlb`) uses the prediction from the *last step*: the last mini-batch comes back, re-augmented, and its
  logits of then teach:
  $\mathrm{{CE}} + \mathrm{{KL}}_{{T}}\big(\sigma(z^{{\text{{last step}}}}/T)\,\|\,\sigma(f(x')/T)\big)$,
  $T = {DLB_TEMPERATURE:g}$.
- **Zipf's LS** (`zipf`) smooths towards a Zipf law over the other classes ranked by the image's own logits:
  $\mathrm{{CE}}(p, y) + {ZIPF_WEIGHT}\,\mathrm{{KL}}\big(\mathrm{{Zipf}}\,\|\,p_{{\neg y}}\big)$,
  $\mathrm{{Zipf}}_k \propto 1/\mathrm{{rank}}_k$.
- **BAKE** (`bake`) puts {BAKE_IMAGES} same-class images next to each anchor and distils the batch's
  feature-affinity ensemble $(1-\omega)(I-\omega W)^{{-1}}\sigma(z/T)$, $\omega = {BAKE_OMEGA}$, into every image.
- **KD** (`kd --teacher RUN_DIR`) distils a separately trained teacher network:
  $\mathrm{{CE}}(p, y) + \lambda\,\mathrm{{KL}}_T\big(\sigma(f_{{\text{{teacher}}}}(x)/T)\,\|\,\sigma(f(x)/T)\big)$,
  the IPS loss
  with a network in place of the more confident view.

What each costs per step (images forwarded) is in `python -m explorer.bench`; how each fares against CE and IPS
on the offline datasets, over seeds, is in docs/results-methods.md.
"""
