"""The optimiser and the learning-rate schedules, value by value."""

import bisect
import math

import pytest
import torch

from explorer.models import build_model
from explorer.training.config import parse_config
from explorer.training.optimizer import build_optimizer, build_scheduler, lr_factor


def test_cosine_decays_once_over_the_whole_run_not_per_epoch():
    cfg = parse_config(["--epochs", "3"])
    factors = [lr_factor(step, cfg, 10) for step in range(30)]
    assert factors == [0.5 * (1 + math.cos(math.pi * step / 30)) for step in range(30)]
    assert factors[10] < factors[9] and factors[20] < factors[19]  # no restart at the epoch boundaries


def test_warmup_then_cosine():
    cfg = parse_config(["--epochs", "4", "--warmup-epochs", "1"])
    assert [lr_factor(step, cfg, 10) for step in range(10)] == [(step + 1) / 10 for step in range(10)]
    assert lr_factor(10, cfg, 10) == 1.0  # the cosine starts at the top after the warm-up ...
    assert lr_factor(25, cfg, 10) == pytest.approx(0.5)  # ... is half-way at the middle of the remaining steps
    assert lr_factor(39, cfg, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))


def test_step_schedule_counts_finished_epochs():
    cfg = parse_config(["--epochs", "6", "--schedule", "step", "--milestones", "2,4", "--gamma", "0.5"])
    by_epoch = [[lr_factor(epoch * 10 + i, cfg, 10) for i in range(10)] for epoch in range(6)]
    assert by_epoch == [[1.0] * 10] * 2 + [[0.5] * 10] * 2 + [[0.25] * 10] * 2


def test_the_preset_schedule_is_self_kd_libs():
    """Self-KD-Lib's utils.adjust_lr, written out: warm-up per step, then milestones counted after the warm-up."""
    cfg = parse_config(["--preset", "cifar100-resnet18"])
    iters = 391  # ceil(50000 / 128)

    def adjust_lr(epoch: int, step: int) -> float:
        if epoch < 5:
            return 0.1 * float(1 + step + epoch * iters) / (5 * iters)
        return 0.1 * 0.1 ** bisect.bisect_right([100, 150], epoch - 5)

    for epoch in range(200):
        for step in (0, 1, 200, iters - 1):
            assert cfg.lr * lr_factor(epoch * iters + step, cfg, iters) == pytest.approx(adjust_lr(epoch, step),
                                                                                      rel=1e-12), (epoch, step)


def test_the_scheduler_sets_the_factor_of_every_step():
    cfg = parse_config(["--epochs", "2", "--warmup-epochs", "1", "--lr", "0.2"])
    model = build_model("small_cnn", 1, 10)
    optimizer = build_optimizer(model.parameters(), cfg, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, cfg, 5)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == [0.2 * lr_factor(step, cfg, 5) for step in range(10)]


def test_sgd_is_nesterov_and_foreach_on_the_cpu():
    cfg = parse_config(["--lr", "0.05", "--weight-decay", "1e-4"])
    group = build_optimizer(build_model("small_cnn", 1, 10).parameters(), cfg, torch.device("cpu")).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.9, True, 1e-4)
    assert group["foreach"] is True and not group["fused"]
