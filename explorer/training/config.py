"""The training CLI's parser and checks, over ``TrainConfig`` (``explorer.training.settings``: its fields are the
flags).

``parse_config`` raises ``ConfigError`` with a one-line message
(the run manager shows it verbatim); ``validate_config`` adds the checks that need the dataset.

Two flags are not settings of their own: ``--preset NAME`` fills in the values of a published protocol
(``explorer.training.presets``) for every flag not given explicitly, and ``--resume RUN_DIR`` takes every setting
from that run's config.json (no other flag may be given with it).
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from explorer.ips import check_patch_size, dividing_patch_sizes
from explorer.training.methods import METHODS
from explorer.training.presets import PRESETS
from explorer.training.processes import training_process_alive
from explorer.training.runfolder import CONFIG, STATUS, TRAIN_STATE, read_json
from explorer.training.settings import TrainConfig, field_types

__all__ = ["MAX_BATCH_SIZE", "MAX_EPOCHS", "MAX_KD_WEIGHT", "MAX_LR", "MAX_SEED", "MAX_STEPS", "MAX_WEIGHT_DECAY",
           "RUN_ID_PATTERN", "TEMPERATURE_RANGE", "ConfigError", "TrainConfig", "build_parser", "check_resumable",
           "field_choices", "field_help", "field_types", "milestone_epochs", "parse_config", "raise_first_refusal",
           "step_anchors", "step_images", "validate_config"]

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Upper bounds: settings beyond them cannot train (overflow, NaN, a batch larger than any dataset) or would hold
# a training slot for months. MAX_STEPS is the run-time bound: two million steps are weeks on a GPU.
MAX_SEED = 2**63 - 1  # torch.manual_seed and torch.Generator take a 64-bit seed
MAX_EPOCHS, MAX_BATCH_SIZE, MAX_STEPS = 100_000, 65_536, 2_000_000
MAX_LR, MAX_WEIGHT_DECAY, MAX_KD_WEIGHT = 10.0, 1.0, 1000.0
TEMPERATURE_RANGE = (0.1, 100.0)  # T below 0.1 makes softmax(z / T) overflow to NaN; above 100 it is flat


_KD_FLAG_METHODS = ", ".join(m.name for m in METHODS.values() if m.uses_kd_flags)
_TWO_VIEW_METHODS = ", ".join(m.name for m in METHODS.values() if m.two_views)
# The flags whose help names the methods, and --method's choices: from the registry, which reads TrainConfig
_REGISTRY_FLAGS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "method": ("; ".join(f"{m.name}: {m.help}" for m in METHODS.values()), tuple(METHODS)),
    "temperature": (f"distillation temperature T of {_KD_FLAG_METHODS} (the other methods use their official "
                    f"values, given in --method's help)", None),
    "kd_weight": (f"weight of the KL term of {_KD_FLAG_METHODS}", None),
    "equal_compute": (f"the two-view methods ({_TWO_VIEW_METHODS}) process B images per step (B/2 anchors), the same "
                      f"compute as CE", None),
}


class ConfigError(ValueError):
    """A training argument that cannot work; the message says what is allowed."""


def raise_first_refusal(checks: list[tuple[bool, str]], milestones: str) -> None:
    """``ConfigError`` with the message of the first failed (ok, message) check, then of ``--milestones``: the
    range checks of every training CLI end here."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    try:
        milestone_epochs(milestones)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def field_help(name: str) -> str:
    """The ``--help`` text of a ``TrainConfig`` field (the Train tab shows it too)."""
    return _REGISTRY_FLAGS[name][0] if name in _REGISTRY_FLAGS else _field(name).metadata["help"]


def field_choices(name: str) -> tuple[str, ...] | None:
    """The values a ``TrainConfig`` field accepts on the CLI (None: any value of its type)."""
    return _REGISTRY_FLAGS[name][1] if name in _REGISTRY_FLAGS else _field(name).metadata["choices"]


def _field(name: str) -> Field:
    return next(f for f in fields(TrainConfig) if f.name == name)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the run manager shows them verbatim)."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The training CLI's parser: one flag per ``TrainConfig`` field (``defaults=False``: a flag not given is
    absent from the result, which tells the flags given from the defaults)."""
    parser = _Parser(prog="python -m explorer.train", description="Train a classifier with plain cross-entropy, "
                     "IPS or a method of the self-distillation field: one loop, every method.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                     argument_default=None if defaults else argparse.SUPPRESS)
    types = field_types()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = {"default": f.default} if defaults else {}
        if types[f.name] is bool:
            parser.add_argument(flag, action="store_true", help=field_help(f.name), **default)
        else:
            choices = field_choices(f.name)  # "" (none, e.g. --preset) is accepted but not offered in the help
            metavar = "{" + ",".join(filter(None, choices)) + "}" if choices and "" in choices else None
            parser.add_argument(flag, type=types[f.name], choices=choices, metavar=metavar, help=field_help(f.name),
                                **default)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse CLI arguments into a config; bad syntax or values raise ``ConfigError`` (one line)."""
    values = vars(build_parser().parse_args(argv))
    given = set(vars(build_parser(defaults=False).parse_args(argv)))
    if values["resume"]:
        return _resume_config(values["resume"], given - {"resume"})
    if values["preset"]:
        values.update({k: v for k, v in PRESETS[values["preset"]].values.items() if k not in given})
        if values["schedule"] != "step" and "milestones" not in given:
            values["milestones"] = ""  # the preset's milestones belong to its step schedule
    cfg = TrainConfig(**values)
    _check_ranges(cfg)
    if "milestones" in given and cfg.milestones and cfg.schedule != "step":
        raise ConfigError(f"--milestones apply to --schedule step only; got --schedule {cfg.schedule}")
    return cfg


@functools.lru_cache(maxsize=16)
def milestone_epochs(text: str) -> tuple[int, ...]:
    """``--milestones`` as epochs: "100,150" -> (100, 150); ValueError unless positive, ascending integers."""
    try:
        epochs = tuple(int(part) for part in text.split(",")) if text.strip() else ()
    except ValueError:
        epochs = (0,)
    if any(e < 1 for e in epochs) or list(epochs) != sorted(set(epochs)):
        raise ValueError(f"--milestones must be ascending epoch numbers separated by commas (e.g. 100,150); "
                         f"got {text!r}")
    return epochs


def check_resumable(run_dir: Path, where: str = "") -> dict[str, Any]:
    """The config.json of a run that ``--resume`` can continue; ``ConfigError`` saying why when it cannot.
    ``where``: how a folder that holds no run is named (default ``--resume RUN_DIR``, the CLI's words; the app
    names the run, never its path on the server)."""
    config, status = read_json(run_dir / CONFIG), read_json(run_dir / STATUS)
    if not config and not status:
        raise ConfigError(f"{where or f'--resume {run_dir}'}: not a run folder (no readable {CONFIG} or {STATUS})")
    state, name = status.get("state", "unknown"), run_dir.name
    if state == "finished":
        raise ConfigError(f"run {name} finished all its {config.get('epochs')} epochs; there is nothing to resume")
    if state in ("queued", "running") and training_process_alive(status):
        raise ConfigError(f"run {name} is {state} (process {status['pid']}); stop it before resuming it")
    if not (run_dir / TRAIN_STATE).is_file() or not config:
        raise ConfigError(f"run {name} has no training state ({TRAIN_STATE}) to resume from: it stopped before its "
                          f"first epoch ended, or was trained by a version without --resume; start it again")
    return config


def _resume_config(run_dir_text: str, given: set[str]) -> TrainConfig:
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(given))
        raise ConfigError(f"--resume continues a run with the settings in its {CONFIG}; leave out {flags}")
    run_dir = Path(run_dir_text).expanduser().resolve()
    config = check_resumable(run_dir)
    values = {f.name: config[f.name] for f in fields(TrainConfig) if f.name in config}
    values.update(out=str(run_dir.parent), run_id=run_dir.name, resume=str(run_dir),
                  precision=config.get("precision_used", values.get("precision", "auto")))
    return TrainConfig(**values)


def _shown(value: int) -> str:
    """A whole number as a message shows it: in full, unless it has more than 30 digits (a form's 1e308)."""
    return f"{value:.3g}" if abs(value) >= 10**30 else str(value)


def _check_ranges(cfg: TrainConfig) -> None:
    low_t, high_t = TEMPERATURE_RANGE
    checks = [
        (1 <= cfg.epochs <= MAX_EPOCHS, f"--epochs must be between 1 and {MAX_EPOCHS}; got {_shown(cfg.epochs)}"),
        (2 <= cfg.batch_size <= MAX_BATCH_SIZE,
         f"--batch-size must be between 2 and {MAX_BATCH_SIZE}; got {_shown(cfg.batch_size)}"),
        (0 <= cfg.seed <= MAX_SEED, f"--seed must be a whole number between 0 and 2^63 - 1; got {_shown(cfg.seed)}"),
        (not (cfg.equal_compute and cfg.batch_size % 2),
         f"--equal-compute needs an even --batch-size; got {cfg.batch_size}"),
        (0 < cfg.lr <= MAX_LR, f"--lr must be a positive number up to {MAX_LR:g}; got {cfg.lr}"),
        (0 <= cfg.weight_decay <= MAX_WEIGHT_DECAY,
         f"--weight-decay must be between 0 and {MAX_WEIGHT_DECAY:g}; got {cfg.weight_decay}"),
        (cfg.gamma > 0 and math.isfinite(cfg.gamma), f"--gamma must be a positive number; got {cfg.gamma}"),
        (0 <= cfg.warmup_epochs < cfg.epochs,
         f"--warmup-epochs must be at least 0 and below --epochs ({cfg.epochs}); got {cfg.warmup_epochs}"),
        (cfg.schedule != "step" or cfg.milestones.strip() != "",
         "--schedule step needs --milestones, the epochs after which the learning rate drops (e.g. 100,150)"),
        (cfg.patch_size >= 0, f"--patch-size must be >= 0 (0: auto); got {cfg.patch_size}"),
        (0 <= cfg.swap_ratio <= 1, f"--swap-ratio must be in [0, 1]; got {cfg.swap_ratio}"),
        (0 <= cfg.swap_prob <= 1, f"--swap-prob must be in [0, 1]; got {cfg.swap_prob}"),
        (low_t <= cfg.temperature <= high_t,
         f"--temperature must be between {low_t:g} and {high_t:g}; got {cfg.temperature}"),
        (0 <= cfg.kd_weight <= MAX_KD_WEIGHT,
         f"--kd-weight must be between 0 and {MAX_KD_WEIGHT:g}; got {cfg.kd_weight}"),
        (cfg.image_size >= 4, f"--image-size must be at least 4; got {cfg.image_size}"),
        (cfg.log_every >= 1, f"--log-every must be at least 1; got {cfg.log_every}"),
        (not METHODS[cfg.method].needs_teacher or cfg.teacher != "",
         f"--method {cfg.method} needs --teacher RUN_DIR, the folder of a finished run to distil from"),
        (METHODS[cfg.method].needs_teacher or cfg.teacher == "", "--teacher applies to --method kd only"),
        (not METHODS[cfg.method].batch_counts_images or cfg.batch_size >= METHODS[cfg.method].images_per_anchor,
         f"--method {cfg.method} needs --batch-size >= {METHODS[cfg.method].images_per_anchor} (it counts images, "
         f"{METHODS[cfg.method].images_per_anchor} per anchor); got {cfg.batch_size}"),
        (cfg.run_id == "" or (RUN_ID_PATTERN.fullmatch(cfg.run_id) is not None and ".." not in cfg.run_id),
         f"--run-id may hold letters, digits, '.', '_' and '-' only (no '..' or '/'); got {cfg.run_id!r}"),
    ]
    raise_first_refusal(checks, cfg.milestones)


def step_anchors(cfg: TrainConfig) -> int:
    """Anchors drawn per optimiser step: B; B/2 for the two-view methods with ``--equal-compute``; B / images per
    anchor for a method whose batch counts images (BAKE)."""
    method = METHODS[cfg.method]
    if method.batch_counts_images:
        return cfg.batch_size // method.images_per_anchor
    return cfg.batch_size // 2 if (method.two_views and cfg.equal_compute) else cfg.batch_size


def step_images(cfg: TrainConfig) -> int:
    """Images forwarded per optimiser step: the anchors times the method's images per anchor (the first step of
    DLB, which has no last batch yet, forwards half as many)."""
    return step_anchors(cfg) * METHODS[cfg.method].images_per_anchor


def validate_config(cfg: TrainConfig, image_size: tuple[int, int], dataset_name: str, world_size: int = 1, *,
                    train_size: int) -> None:
    """Checks that need the dataset or the process count: a step's anchors must fit in the training split
    (``train_size`` images; under DistributedDataParallel the global batch, which every process draws) and the run
    in ``MAX_STEPS``, the patch size must tile the images, and every process must get an equal slice of the
    anchors."""
    anchors = step_anchors(cfg)
    if anchors > train_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} asks for {anchors} anchors per step, more than the "
                          f"{train_size} training images of {dataset_name}; pick at most {train_size}")
    steps_per_epoch = math.ceil(train_size / cfg.batch_size)  # the loop's count, --equal-compute or not
    if cfg.epochs * steps_per_epoch > MAX_STEPS:
        raise ConfigError(f"--epochs {cfg.epochs} at --batch-size {cfg.batch_size} on {dataset_name} is "
                          f"{cfg.epochs * steps_per_epoch} steps; a run may take at most {MAX_STEPS} (at most "
                          f"{MAX_STEPS // steps_per_epoch} epochs here)")
    if anchors % world_size:
        halved = ", halved by --equal-compute" if anchors != cfg.batch_size else ""
        raise ConfigError(f"{anchors} anchors per step (--batch-size {cfg.batch_size}{halved}) do not split evenly "
                          f"over {world_size} processes; pick a --batch-size that does")
    if METHODS[cfg.method].swaps_patches and cfg.patch_size:
        try:
            check_patch_size(cfg.patch_size, image_size)
        except ValueError:
            h, w = image_size
            raise ConfigError(f"--patch-size {cfg.patch_size} does not divide the {h}x{w} images of {dataset_name}; "
                              f"allowed: {dividing_patch_sizes(h, w)}") from None
