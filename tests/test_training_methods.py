"""The methods that read --temperature and --kd-weight compute the loss the flags say: CE + weight x KD, KD at T
(BAKE and KD are checked against their official formulas in test_method_steps.py).

The expected values are computed here from the logits the step's forward passes returned, by the definitions
(KL(teacher || student) at T, times T^2), not by the loss functions of ``explorer.ips``.
"""

import pytest
import torch
import torch.nn.functional as F

from explorer.ips import build_class_index
from explorer.models import build_model
from explorer.training.config import parse_config
from explorer.training.loop import method_loss
from explorer.training.methods import METHODS

WEIGHT, TEMPERATURE = 0.5, 2.0  # neither is a default (1.0, 4.0): a step that ignores one is caught


def _kl_t2(teacher, student, t):
    p_teacher = torch.softmax(teacher / t, 1)
    return t * t * (p_teacher * (torch.log_softmax(teacher / t, 1) - torch.log_softmax(student / t, 1))).sum(1)


def _margin(logits, targets):
    others = logits.clone()
    others[torch.arange(len(targets)), targets] = float("-inf")
    return logits[torch.arange(len(targets)), targets] - others.max(1).values


def _ips_reference(rule):
    def reference(passes, targets, t):
        a, b = passes[0].chunk(2)
        p_a, p_b = (x.softmax(1)[torch.arange(len(targets)), targets] for x in (a, b))
        a_teaches = (_margin(a, targets) >= _margin(b, targets)) if rule == "margin" else p_a >= p_b
        teacher = torch.where(a_teaches[:, None], a, b)
        kd = _kl_t2(teacher, torch.where(a_teaches[:, None], b, a), t)
        if rule == "correct":
            kd = kd * (teacher.argmax(1) == targets)
        return (F.cross_entropy(a, targets) + F.cross_entropy(b, targets)) / 2, kd.mean()
    return reference


def _cskd_reference(passes, targets, t):
    anchor, partner = passes if len(passes) == 2 else passes[0].chunk(2)  # separate passes, or one joint pass
    return F.cross_entropy(anchor, targets), _kl_t2(partner, anchor, t).mean()


def _ce_reference(passes, targets, t):
    return F.cross_entropy(passes[0], targets), torch.zeros(())


REFERENCES = {"ce": _ce_reference, "cskd": _cskd_reference, "ips": _ips_reference("probability"),
              "ips-margin": _ips_reference("margin"), "ips-correct": _ips_reference("correct")}
CHECKED_IN_METHOD_STEPS = {"bake", "kd"}  # at T = 2 and a weight below 1, against the official code's formulas


def test_every_method_that_reads_the_kd_flags_is_checked_at_flags_other_than_the_defaults():
    reads_flags = {name for name, method in METHODS.items() if method.uses_kd_flags}
    assert reads_flags == (set(REFERENCES) - {"ce"}) | CHECKED_IN_METHOD_STEPS


@pytest.mark.parametrize("method", list(REFERENCES))
def test_a_steps_loss_is_ce_plus_the_kd_weight_times_kd_at_the_temperature(digits, method):
    cfg = parse_config(["--dataset", "digits", "--method", method, "--kd-weight", str(WEIGHT),
                        "--temperature", str(TEMPERATURE), "--swap-prob", "1"])
    torch.manual_seed(0)
    model, passes = build_model("small_cnn", 1, 10), []

    def forward(images):
        passes.append(model(digits.normalize(images)))
        return passes[-1]

    anchors = torch.arange(0, 256, 8)  # 32 anchors of every class
    out = method_loss(cfg, forward, digits, anchors, build_class_index(digits.train_labels, 10), 2,
                      torch.Generator().manual_seed(5), slice(None))
    ce, kd = REFERENCES[method]([p.detach() for p in passes], digits.train_labels[anchors], TEMPERATURE)
    assert float(out.ce) == pytest.approx(float(ce), rel=1e-5)
    assert float(out.kd) == pytest.approx(float(kd), rel=1e-5, abs=1e-7)
    assert float(out.loss.detach()) == pytest.approx(float(ce) + WEIGHT * float(kd), rel=1e-5)
    assert (float(kd) > 1e-4) == (method != "ce")  # the weight is seen: KD is not zero for a distilling method
