"""The project's measured numbers, written once: ``explorer/measured.json``.

A study's comparisons (paired per-seed differences with 95 % intervals, ``explorer.training.study``) are recorded
here by the study command itself (``python -m explorer.study ... --record``), with the command that made them;
the Guide, the Train tab's schedules and the documentation read them from this file (a test checks that
``docs/results.md`` quotes them as recorded). Published numbers of other projects (``published``) live in the same
file, apart from ours, so no number is typed twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from explorer.checkpoints import atomic_write_text

__all__ = ["MEASURED_FILE", "Recorded", "published", "record_study", "recorded"]

MEASURED_FILE = Path(__file__).resolve().parents[1] / "measured.json"


@dataclass(frozen=True)
class Recorded:
    """One comparison of a study: setting against baseline, test accuracy difference in points (95 % CI)."""

    study: str
    command: str  # the study command that made it
    dataset: str
    split: str  # "test", or "holdout" (80/20 of the training split)
    comparison: str  # "equal epochs", ...
    setting: str
    baseline: str
    method: str  # the setting's method
    epochs: int  # the setting's
    swap_prob: float  # the setting's (IPS): the studies pin it
    seeds: int
    difference: float
    low: float
    high: float
    nll_baseline: float | None  # mean over the seeds; None where the study's record lacks it
    nll_setting: float | None

    def text(self) -> str:
        """The comparison as a sentence fragment (the Guide and the Train tab quote it)."""
        return (f"{self.dataset}, {self.epochs} epochs, {self.split} split, {self.seeds} seeds, swap probability "
                f"{self.swap_prob:g}: IPS − CE {_signed(self.difference)} points (95 % CI {_signed(self.low)} to "
                f"{_signed(self.high)})")


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def _cached(path: Path, mtime: float) -> dict[str, Any]:
    return _read(path)


def _data(path: Path) -> dict[str, Any]:
    return _cached(path, path.stat().st_mtime)


def recorded(path: Path = MEASURED_FILE) -> tuple[Recorded, ...]:
    """Every recorded comparison, in the file's order."""
    return tuple(Recorded(**row) for row in _data(path)["comparisons"])


def published(path: Path = MEASURED_FILE) -> dict[str, Any]:
    """Other projects' published numbers (``source``, ``protocol`` and the numbers), by name."""
    return _data(path)["published"]


def record_study(study_id: str, rows: list[Recorded], path: Path = MEASURED_FILE) -> None:
    """Replace study ``study_id``'s recorded comparisons with ``rows`` (other studies' rows stay, in order); the
    file is replaced atomically."""
    data = _read(path) if path.is_file() else {"comparisons": [], "published": {}}
    kept = [row for row in data["comparisons"] if row["study"] != study_id]
    data["comparisons"] = kept + [vars(row) for row in rows]
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
