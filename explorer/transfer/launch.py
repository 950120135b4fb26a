"""Transfer runs through the run manager: the Transfer tab's launches, listed, cancelled and resumed like any run.

The settings are checked as the CLI checks them (``parse_transfer_config``), the backbone's card is read (a folder
that is no classification run of a backbone architecture is refused at once, not in the training process), and the
run is queued with ``RunManager.launch_command`` as ``python -m explorer.transfer --out RUNS --run-id ID ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from explorer.checkpoints import CheckpointError, load_card
from explorer.training.command import config_argv
from explorer.training.config import ConfigError
from explorer.training.runs import RunError, RunManager
from explorer.transfer.backbones import BACKBONE_LAYERS
from explorer.transfer.config import TransferConfig, parse_transfer_config

__all__ = ["SETTINGS", "launch_transfer"]

SETTINGS = tuple(f.name for f in fields(TransferConfig) if f.name not in ("out", "run_id", "resume", "download"))


def _argv(settings: Mapping[str, Any]) -> list[str]:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise RunError(f"unknown setting(s) {', '.join(unknown)}; a transfer run takes {', '.join(SETTINGS)}")
    argv = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv.append(f"{flag}={int(value) if isinstance(value, float) and value.is_integer() else value}")
    return argv


def _backbone_card(path: str) -> dict[str, Any]:
    try:
        card = load_card(path)
    except CheckpointError as exc:
        raise RunError(f"--backbone: {exc}") from None
    if card.get("task") or card["model"] not in BACKBONE_LAYERS:
        raise RunError(f"--backbone {Path(path).name} is no classification run of {' or '.join(BACKBONE_LAYERS)}")
    return card


def launch_transfer(runs: RunManager, settings: Mapping[str, Any], run_id: str | None = None,
                    study: str | None = None) -> str:
    """Queue a transfer run with ``settings`` (``SETTINGS`` names -> values; the backbone as a folder path);
    ``RunError`` with the CLI's message for anything that cannot work. Returns the run id."""
    try:
        cfg = parse_transfer_config(_argv(settings))
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    cfg = replace(cfg, backbone=str(Path(cfg.backbone).expanduser().resolve()))
    card = _backbone_card(cfg.backbone)
    method = str(card.get("method", "?"))
    shown = {"method": f"{cfg.task}:{method}", "model": f"{cfg.head_name}/{card['model']}"}  # the runs table's

    def command(new_id: str) -> tuple[list[str], dict[str, Any]]:
        config = replace(cfg, out=str(runs.runs_dir), run_id=new_id)
        return [sys.executable, "-m", "explorer.transfer", *config_argv(config)], {**asdict(config), **shown}

    return runs.launch_command(f"{cfg.task}-{method}", command, cfg.epochs, cfg.device, 1, run_id, study)
