"""Settings -> ``TrainConfig`` -> the training command: the one place a training command is made.

The Train tab's preview, the run manager's launch and resume, the study and the executors all call this module,
so the command a user is shown is the command that runs (as LLaMA-Factory's runner feeds one args dict to both its
preview and its launch). A run is one of::

    python -m explorer.train --dataset ... --method ...                                   # one process
    python -m torch.distributed.run --standalone --nproc_per_node=N -m explorer.train ...  # N GPUs, DDP
    python -m explorer.train --resume RUN_DIR                                             # a run continued

Settings are what a form or a study holds: ``TrainConfig`` field names (``FORM_FIELDS``) mapped to values, which
may come from a browser (a number box gives ``5.0`` for 5, an emptied box ``None``).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from explorer.training.config import ConfigError, TrainConfig, field_types, parse_config

__all__ = ["FORM_DEFAULTS", "FORM_FIELDS", "SettingsError", "config_argv", "config_from_settings", "preview",
           "resume_command", "settings_argv", "training_command"]

# What a form or a study may set: every field but where the run goes and how a process continues it.
FORM_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("out", "run_id", "download", "resume"))
# The Train tab's defaults: the CLI's (IPS, small_cnn on mnist5k), 5 epochs: about a minute on a laptop CPU
FORM_DEFAULTS = {**{name: getattr(TrainConfig(), name) for name in FORM_FIELDS}, "epochs": 5}
_OPTIONAL = frozenset(f.name for f in fields(TrainConfig) if f.default == "")  # "" means "none" (--preset, ...)
_TRAIN_MODULE = "explorer.train"


class SettingsError(ConfigError):
    """A setting that is not a value at all (unknown, empty, not a boolean); the message says which."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _typed(name: str, value: Any, kinds: Mapping[str, type]) -> Any:
    """A form value as its field's type where a browser sends another (5.0 for an int field); refuses the
    values that are no setting at all."""
    if value is None or (value == "" and name not in _OPTIONAL):
        raise SettingsError(f"{_flag(name)} is empty; give it a value")
    if kinds[name] is bool and not isinstance(value, bool):
        raise SettingsError(f"{_flag(name)} must be true or false; got {value!r}")
    if kinds[name] is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def settings_argv(settings: Mapping[str, Any]) -> list[str]:
    """Form values -> CLI arguments for ``parse_config`` (``--name=value``, so no value is read as a flag);
    ``SettingsError`` for an unknown, empty or mistyped setting."""
    unknown = sorted(set(settings) - set(FORM_FIELDS))
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; a run takes {', '.join(FORM_FIELDS)}")
    kinds, argv = field_types(), []
    for name, raw in settings.items():
        value = _typed(name, raw, kinds)
        if kinds[name] is bool:
            argv += [_flag(name)] if value else []
        else:
            argv.append(f"{_flag(name)}={value}")
    return argv


def config_from_settings(settings: Mapping[str, Any]) -> TrainConfig:
    """The config the training CLI would build from these settings (missing ones take the CLI defaults);
    ``ConfigError`` with the CLI's own one-line message when it would refuse them."""
    return parse_config(settings_argv(settings))


def config_argv(cfg: Any, changed_only: bool = False) -> list[str]:
    """The CLI arguments that reproduce ``cfg`` (``changed_only``: only the flags that differ from the CLI's
    defaults, as a person would type them). ``--resume`` is how a process continues a run, not a setting of
    it, and is left out. ``cfg`` is a ``TrainConfig``, or another CLI's config dataclass whose fields are its flags
    the same way (``explorer.transfer``'s)."""
    defaults, argv = type(cfg)(), []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "resume" or (changed_only and value == getattr(defaults, f.name)):
            continue
        if isinstance(value, bool):
            argv += [_flag(f.name)] if value else []
        else:
            argv += [_flag(f.name), str(value)] if value != "" else [f"{_flag(f.name)}="]
    return argv


def _launcher(processes: int, python: str | None, module: str = _TRAIN_MODULE) -> list[str]:
    python = python or sys.executable  # read at each call: a caller may point it elsewhere
    if processes > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", module]
    return [python, "-m", module]


def training_command(cfg: TrainConfig, processes: int = 1, python: str | None = None,
                     changed_only: bool = False) -> list[str]:
    """The command that trains ``cfg`` on ``processes`` processes (> 1: DistributedDataParallel under torchrun)."""
    return [*_launcher(processes, python), *config_argv(cfg, changed_only)]


def resume_command(run_dir: Path, processes: int = 1, python: str | None = None,
                   module: str = _TRAIN_MODULE) -> list[str]:
    """The command that continues the run in ``run_dir`` with the settings of its config.json (``module``: the
    training CLI that made the run, ``explorer.transfer`` for a transfer run)."""
    return [*_launcher(processes, python, module), "--resume", str(run_dir)]


def preview(settings: Mapping[str, Any], processes: int = 1, executor: str = "local") -> str:
    """The command a person would type for these settings (the flags that differ from the defaults), or a
    ``# ...`` line with the CLI's refusal: what the Train tab shows under its form. ``executor="slurm"``: the
    same run sent to SLURM as one job of ``processes`` processes, one per GPU (``explorer.training.slurm``)."""
    try:
        cfg = config_from_settings(settings)
    except SettingsError as exc:
        return f"# {exc}"
    except ConfigError as exc:
        return f"# the CLI refuses these settings: {exc}"
    if executor == "slurm":
        gpus = ["--gpus-per-node", str(processes)] if processes > 1 else []
        return shlex.join([*training_command(cfg, python="python", changed_only=True), "--executor", "slurm", *gpus])
    return shlex.join(training_command(cfg, processes, python="python", changed_only=True))
