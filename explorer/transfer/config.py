"""Every argument of a transfer run in one dataclass, its command-line parser and its checks.

``TransferConfig``'s fields are the CLI of ``python -m explorer.transfer``: each becomes ``--name-with-dashes``. The
run-folder, device, seed and precision flags mean what they mean for ``explorer.train``, and the optimiser is the
same (``explorer.training.optimizer``: SGD with Nesterov momentum, cosine or step schedule, optional warm-up).
``--resume RUN_DIR`` continues a cancelled, failed or interrupted transfer run with the settings of its config.json.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from explorer.data.scenes import DENSE_DATASETS, DIGIT_HEIGHTS, SCENE_SEED, TEST_SCENES, TRAIN_SCENES
from explorer.training.config import MAX_SEED, RUN_ID_PATTERN, ConfigError, check_resumable, raise_first_refusal
from explorer.training.precision import PRECISIONS
from explorer.transfer.heads import HEADS, TASKS

__all__ = ["MAX_SCENE_SIZE", "TransferConfig", "parse_transfer_config"]

MAX_SCENE_SIZE, MAX_SCENES, MAX_EPOCHS = 512, 100_000, 10_000


def _arg(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TransferConfig:
    """Every transfer argument; the CLI flags are these names with dashes."""

    task: str = _arg("segmentation", "what the head learns", TASKS)
    backbone: str = _arg("", "the classification run (or checkpoint folder) whose trained layers become the backbone")
    dataset: str = _arg("digit-scenes", "digit-scenes (offline: scenes of mnist5k digits) or voc (Pascal VOC 2012 "
                                        "under --data-root)", DENSE_DATASETS)
    head: str = _arg("", "segmentation: fcn (default) or deeplabv3; detection: fcos (default)")
    epochs: int = _arg(8, "fine-tuning epochs (an epoch: every training scene once)")
    batch_size: int = _arg(32, "scenes per optimiser step")
    lr: float = _arg(0.02, "peak learning rate of SGD (Nesterov momentum 0.9)")
    weight_decay: float = _arg(1e-4, "SGD weight decay")
    schedule: str = _arg("cosine", "learning rate per step after the warm-up: cosine or step", ("cosine", "step"))
    milestones: str = _arg("", "--schedule step: epochs after which the learning rate is multiplied by --gamma")
    gamma: float = _arg(0.1, "--schedule step: factor applied to the learning rate at each milestone")
    warmup_epochs: int = _arg(1, "epochs of linear warm-up (the new head starts from random weights)")
    freeze_backbone: bool = _arg(False, "train the head only: the backbone's weights and BatchNorm statistics stay "
                                        "as the classification run left them")
    scene_size: int = _arg(64, f"digit-scenes: side of a scene in pixels (at least {DIGIT_HEIGHTS[1]}, the largest "
                               f"digit, and a multiple of the backbone's stride)")
    train_scenes: int = _arg(TRAIN_SCENES, "digit-scenes: training scenes (from mnist5k's training digits)")
    test_scenes: int = _arg(TEST_SCENES, "digit-scenes: test scenes (from mnist5k's test digits)")
    scene_seed: int = _arg(SCENE_SEED, "digit-scenes: seed of the scenes (the same for every backbone compared)")
    seed: int = _arg(0, "seed of the head's initialisation and of the batch order")
    device: str = _arg("auto", "auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps")
    precision: str = _arg("auto", "autocast precision of the forward pass: auto (bf16 on a CUDA GPU that supports it, "
                                  "else fp32), fp32, bf16 or fp16 (with loss scaling)", PRECISIONS)
    data_root: str = _arg("data", "voc: the folder holding VOCdevkit/VOC2012")
    download: bool = _arg(False, "voc: download Pascal VOC 2012 into --data-root when missing (needs internet)")
    image_size: int = _arg(128, "voc: images are resized to this square size")
    out: str = _arg("runs", "folder that receives the run folder")
    run_id: str = _arg("", "name of the run folder (default: the time, task, backbone's method and seed)")
    log_every: int = _arg(10, "write a step record to metrics.jsonl every this many steps")
    resume: str = _arg("", "continue the cancelled, failed or interrupted transfer run in this run folder from its "
                           "last finished epoch, with the settings in its config.json (give no other flag)")

    @property
    def head_name(self) -> str:
        """--head, or the task's default."""
        return self.head or HEADS[self.task][0]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)


def _parser(defaults: bool) -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m explorer.transfer", description="Fine-tune a classification run's backbone for "
                     "segmentation or detection and evaluate it.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                     argument_default=None if defaults else argparse.SUPPRESS)
    types = typing.get_type_hints(TransferConfig)
    for f in fields(TransferConfig):
        flag, default = "--" + f.name.replace("_", "-"), ({"default": f.default} if defaults else {})
        if types[f.name] is bool:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"], **default)
        else:
            parser.add_argument(flag, type=types[f.name], choices=f.metadata["choices"], help=f.metadata["help"],
                                **default)
    return parser


def parse_transfer_config(argv: list[str] | None = None) -> TransferConfig:
    """CLI arguments -> a checked config; ``ConfigError`` (one line) for anything that cannot work."""
    values = vars(_parser(True).parse_args(argv))
    if values["resume"]:
        given = set(vars(_parser(False).parse_args(argv))) - {"resume"}
        if given:
            raise ConfigError(f"--resume continues a run with the settings in its config.json; leave out "
                              f"{', '.join('--' + g.replace('_', '-') for g in sorted(given))}")
        run_dir = Path(values["resume"]).expanduser().resolve()
        config = check_resumable(run_dir)
        if "task" not in config:
            raise ConfigError(f"--resume {run_dir}: a classification run; continue it with python -m explorer.train")
        values = {f.name: config[f.name] for f in fields(TransferConfig) if f.name in config}
        values.update(out=str(run_dir.parent), run_id=run_dir.name, resume=str(run_dir))
    cfg = TransferConfig(**values)
    _check(cfg)
    return cfg


def _check(cfg: TransferConfig) -> None:
    heads = HEADS[cfg.task]
    checks = [
        (cfg.backbone != "", "--backbone is required: the folder of a classification run (small_cnn or resnet18)"),
        (cfg.head in ("", *heads), f"--head {cfg.head} does not do {cfg.task}; choose {' or '.join(heads)}"),
        (1 <= cfg.epochs <= MAX_EPOCHS, f"--epochs must be between 1 and {MAX_EPOCHS}; got {cfg.epochs}"),
        (2 <= cfg.batch_size <= 4096, f"--batch-size must be between 2 and 4096; got {cfg.batch_size}"),
        (0 < cfg.lr <= 10, f"--lr must be a positive number up to 10; got {cfg.lr}"),
        (0 <= cfg.weight_decay <= 1, f"--weight-decay must be between 0 and 1; got {cfg.weight_decay}"),
        (0 <= cfg.warmup_epochs < cfg.epochs, f"--warmup-epochs must be at least 0 and below --epochs ({cfg.epochs})"),
        (cfg.schedule != "step" or cfg.milestones.strip() != "", "--schedule step needs --milestones (e.g. 5,8)"),
        (cfg.gamma > 0, f"--gamma must be a positive number; got {cfg.gamma}"),
        (DIGIT_HEIGHTS[1] <= cfg.scene_size <= MAX_SCENE_SIZE,
         f"--scene-size must be between {DIGIT_HEIGHTS[1]} (the largest digit) and {MAX_SCENE_SIZE}; got "
         f"{cfg.scene_size}"),
        (cfg.batch_size <= cfg.train_scenes <= MAX_SCENES,
         f"--train-scenes must be between --batch-size ({cfg.batch_size}) and {MAX_SCENES}; got {cfg.train_scenes}"),
        (1 <= cfg.test_scenes <= MAX_SCENES, f"--test-scenes must be between 1 and {MAX_SCENES}"),
        (0 <= cfg.seed <= MAX_SEED and 0 <= cfg.scene_seed <= MAX_SEED, "--seed and --scene-seed must be >= 0"),
        (16 <= cfg.image_size <= MAX_SCENE_SIZE, f"--image-size must be between 16 and {MAX_SCENE_SIZE}"),
        (cfg.log_every >= 1, f"--log-every must be at least 1; got {cfg.log_every}"),
        (cfg.run_id == "" or (RUN_ID_PATTERN.fullmatch(cfg.run_id) is not None and ".." not in cfg.run_id),
         f"--run-id may hold letters, digits, '.', '_' and '-' only (no '..' or '/'); got {cfg.run_id!r}"),
    ]
    raise_first_refusal(checks, cfg.milestones)
