"""Training schedules offered by purpose, each with how long it takes on this machine.

Why: IPS needs a long enough schedule. The project's study (README, "Results on mnist5k") found IPS ahead of CE
at 30 epochs on every seed, while after 5 epochs it was behind CE on every seed we ran (mnist5k, seeds 0-2, CPU:
CE 95.2-95.8 %, IPS 89.6-91.3 %; ``python -m explorer.train --method M --epochs 5 --seed S``). A Train tab whose only
default is a one-minute run invites exactly the comparison that misleads, so the tab offers schedules named by
what they are for, and says how long each takes here: ``explorer.training.study.estimate_run_seconds``, from the
images/s of earlier finished runs of the same dataset, model and method in the runs folder (or an assumed speed,
and the text says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explorer.data import DatasetError
from explorer.training.config import TrainConfig
from explorer.training.study import estimate_run_seconds

__all__ = ["FAIR", "QUICK", "SCHEDULES", "Schedule", "duration_text", "estimate_text", "schedule_choices"]


@dataclass(frozen=True)
class Schedule:
    """A number of epochs and what it is for."""

    key: str
    purpose: str
    epochs: int
    caveat: str


QUICK = Schedule("quick", "quick look", 5, "IPS usually loses to CE this early")
FAIR = Schedule("fair", "fair comparison", 30, "long enough for IPS (the README's comparisons use 30 epochs)")
SCHEDULES = (QUICK, FAIR)


def duration_text(seconds: float) -> str:
    """A rough duration: "~40 s", "~3 min", "~1.5 h"."""
    if seconds < 90:
        return f"~{max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def estimate_text(settings: Mapping[str, Any], runs_dir: Path) -> tuple[str, str]:
    """(duration, how it was estimated) of one run with the Train form's ``settings`` (TrainConfig fields)."""
    known = {k: v for k, v in settings.items() if k in asdict(TrainConfig())}
    try:
        cfg = TrainConfig(**{**asdict(TrainConfig()), **known})
        seconds, how = estimate_run_seconds(cfg, runs_dir)
    except (DatasetError, TypeError, ValueError) as exc:
        return "time unknown", f"no estimate: {exc}"
    return duration_text(seconds), how


def schedule_choices(settings: Mapping[str, Any], runs_dir: Path) -> list[tuple[str, str]]:
    """(label, key) of every schedule for these form settings: "quick look · 5 epochs · ~40 s: IPS usually ..."."""
    return [(f"{s.purpose} · {s.epochs} epochs · {estimate_text({**settings, 'epochs': s.epochs}, runs_dir)[0]}: "
             f"{s.caveat}", s.key) for s in SCHEDULES]
