"""Every training setting in one dataclass: ``TrainConfig``'s fields *are* the CLI flags.

Each field becomes ``--name-with-dashes`` with its type, default and help text, so a new argument is one new field.
The help of the flags whose text names the methods (``--method``, ``--temperature``, ``--kd-weight``,
``--equal-compute``) and ``--method``'s choices come from the method registry, added by
``explorer.training.config`` when it builds the parser: the registry's steps read these settings, so this module
knows nothing of the registry.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from explorer.data import DATA_MODES
from explorer.training.precision import LAYOUTS, PRECISIONS
from explorer.training.presets import PRESETS

__all__ = ["TrainConfig", "field_types"]


def _arg(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Every training argument; the CLI flags are these names with dashes."""

    dataset: str = _arg("mnist5k", "mnist5k (offline), digits, cifar10, cifar100, tinyimagenet or imagefolder:PATH")
    model: str = _arg("small_cnn", "small_cnn, resnet18 (CIFAR stem) or any torchvision classification model name")
    method: str = _arg("ips", "the training method (the CLI's --help lists every one)")
    epochs: int = _arg(30, "training epochs")
    batch_size: int = _arg(128, "anchors per step (images per step for CE and with --equal-compute)")
    lr: float = _arg(0.1, "peak learning rate of SGD (Nesterov momentum 0.9)")
    weight_decay: float = _arg(5e-4, "SGD weight decay")
    schedule: str = _arg("cosine", "learning rate per step after the warm-up: cosine (to 0 at the last step) or step "
                                   "(x --gamma at each of --milestones)", ("cosine", "step"))
    milestones: str = _arg("", "--schedule step: epochs after which the learning rate is multiplied by --gamma, "
                               "comma-separated, counted from the start of training (e.g. 100,150)")
    gamma: float = _arg(0.1, "--schedule step: factor applied to the learning rate at each milestone")
    warmup_epochs: int = _arg(0, "epochs of linear warm-up, per step, from --lr / warm-up steps to --lr")
    seed: int = _arg(0, "seed of the model initialisation and of every random draw")
    patch_size: int = _arg(0, "IPS patch side in pixels, must divide the image size (0: auto, the largest divisor "
                              "of the side <= side / 4, a 4x4 grid or finer)")
    swap_ratio: float = _arg(0.5, "IPS: fraction of patch positions exchanged per pair, in [0, 1]")
    swap_prob: float = _arg(0.5, "IPS: probability that a pair is swapped at all, in [0, 1] (0.5: our choice, made "
                                 "on a holdout split; docs/results.md)")
    temperature: float = _arg(4.0, "distillation temperature T")
    kd_weight: float = _arg(1.0, "weight of the KL term")
    equal_compute: bool = _arg(False, "the two-view methods process B images per step (B/2 anchors), the same "
                                      "compute as CE")
    teacher: str = _arg("", "--method kd: the folder of a finished run whose model teaches (any model, trained on the "
                            "same classes and image size)")
    cskd_partner_pass: str = _arg("separate", "CS-KD: forward the partners in a separate no-grad pass after the "
                                              "anchors (as the official code and Self-KD-Lib do), or joint: one pass "
                                              "over anchors and partners (BatchNorm then sees both at once)",
                                  ("separate", "joint"))
    device: str = _arg("auto", "auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps")
    precision: str = _arg("auto", "autocast precision of the forward pass (losses stay fp32): auto (bf16 on a CUDA GPU "
                                  "that supports it, else fp32), fp32, bf16 or fp16 (with loss scaling)", PRECISIONS)
    channels_last: str = _arg("auto", "NHWC memory layout for the model and its inputs: auto (on for conv nets on "
                                      "CUDA), on or off", LAYOUTS)
    compile: bool = _arg(False, "torch.compile the model (a slow first epoch, faster steps on a GPU)")
    data_root: str = _arg("data", "folder holding CIFAR (cifar-10-batches-py, cifar-100-python) or Tiny-ImageNet "
                                  "(tiny-imagenet-200)")
    download: bool = _arg(False, "download CIFAR or Tiny-ImageNet into --data-root when missing (needs internet)")
    image_size: int = _arg(32, "imagefolder: images are resized to this square size")
    data_mode: str = _arg("auto", "image folders and tinyimagenet: memory (decode every image up front), stream (read "
                                  "batches from disk with DataLoader workers) or auto (stream when the decoded images "
                                  "would not fit half the available memory); other datasets are always in memory",
                          DATA_MODES)
    holdout: bool = _arg(False, "train on 80%% of the training split and report the metrics on the other 20%% "
                                "(per class), to choose hyper-parameters without looking at the test split")
    out: str = _arg("runs", "folder that receives the run folder")
    run_id: str = _arg("", "name of the run folder (default %(default)r: a name made of the time, method, dataset, "
                           "model and seed)")
    log_every: int = _arg(10, "write a step record to metrics.jsonl every this many steps")
    preset: str = _arg("", "a published protocol whose values fill every flag not given: "
                           + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values()), ("", *PRESETS))
    resume: str = _arg("", "continue the cancelled, failed or interrupted run in this run folder from its last "
                           "finished epoch, with the settings in its config.json (give no other flag)")


def field_types() -> dict[str, type]:
    """The type of every ``TrainConfig`` field (resolved annotations, not their strings)."""
    return typing.get_type_hints(TrainConfig)
