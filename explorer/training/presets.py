"""Published training protocols, one flag away: ``python -m explorer.train --preset NAME --method ...``.

A preset sets the training arguments of a published protocol; any flag given next to it wins over the preset's
value (``--preset cifar100-resnet18 --epochs 10`` is the same protocol, shortened). It never sets the method,
the seed, the device or the output folder. The published numbers are stated with their source so that a run can
be put next to them; they are the best test accuracy over the epochs of one run, as Self-KD-Lib reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explorer.training.measured import published

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """A named protocol: the argument values it sets and what its source reports with them."""

    name: str
    summary: str  # one line for --help and the app
    values: dict[str, Any]  # TrainConfig field -> value
    table: str  # the source's table in explorer/measured.json ("published")
    names: dict[str, str]  # method -> its name in that table
    source: str

    @property
    def published(self) -> dict[str, float]:
        """method -> top-1 test accuracy (%) in the source, read from the measured-numbers file."""
        top1 = published()[self.table]["top1"]
        return {method: top1[name] for method, name in self.names.items()}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="cifar100-resnet18",
        summary="Self-KD-Lib's CIFAR-100 protocol: ResNet-18, 200 epochs, batch 128, SGD (Nesterov, momentum 0.9) "
                "lr 0.1 with 5 warm-up epochs, x0.1 at epochs 105 and 155 (100 and 150 after the warm-up), "
                "weight decay 5e-4, T = 4",
        values={"dataset": "cifar100", "model": "resnet18", "epochs": 200, "batch_size": 128, "lr": 0.1,
                "weight_decay": 5e-4, "schedule": "step", "milestones": "105,155", "gamma": 0.1, "warmup_epochs": 5,
                "temperature": 4.0, "kd_weight": 1.0},
        table="self-kd-lib",
        names={"ce": "cross-entropy", "ls": "label smoothing", "mixup": "Mixup", "cutmix": "CutMix",
               "tfkd": "Tf-KD-reg", "cskd": "CS-KD", "pskd": "PS-KD", "bake": "BAKE"},
        source="github.com/winycg/Self-KD-Lib (README table, ResNet-18 on CIFAR-100; main.py and utils.adjust_lr: "
               "warm-up 5, milestones [100, 150] counted after the warm-up, SGD nesterov=True)"),
)}
