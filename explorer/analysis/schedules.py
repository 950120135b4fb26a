"""Training schedules offered by purpose, each with how long it takes on this machine, and what the project measured.

Why: IPS needs a long enough schedule: the project's studies found it behind CE after a short schedule and level
or ahead after a longer one (``explorer/measured.json``, recorded by ``python -m explorer.study --record``; the
numbers are quoted from there, never typed here). A Train tab whose only default is a one-minute run invites exactly
the comparison that misleads, so the tab offers schedules named by what they are for, each quoting what was
measured, and says how long each takes here.

The time: ``estimate_run_seconds`` (``explorer.training.study.estimate_seconds`` of a study of one run), from
the images/s of earlier finished runs of the same dataset, model and method in the runs folder; without one,
from a few training steps timed on this machine (``measured_speed``, once per setting and device), never from an
assumed speed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from explorer.data import DatasetError, load_dataset
from explorer.device import resolve_device
from explorer.training.config import TrainConfig, step_images
from explorer.training.loop import build_session, train_step
from explorer.training.measured import recorded
from explorer.training.study import Setting, StudySpec, estimate_seconds

__all__ = ["QUICK", "TIMED_STEPS", "Schedule", "duration_text", "estimate_run_seconds", "estimate_text",
           "evidence_markdown", "fair_schedule", "measured_speed", "schedule_choices", "schedules"]

TIMED_STEPS = 4  # training steps timed (after one warm-up step) when no earlier run tells the speed


def _measured(dataset: str, epochs: int, split: str, swap_prob: float = 1.0) -> str:
    """The recorded IPS-against-CE comparison of the same epochs on ``dataset``, as text."""
    return next(r for r in recorded() if (r.method, r.baseline, r.dataset, r.split, r.swap_prob)
                == ("ips", f"ce {epochs} ep", dataset, split, swap_prob) and r.epochs == epochs).text()


@dataclass(frozen=True)
class Schedule:
    """A number of epochs, what it is for (``caveat``: in its label) and what was measured there (``evidence``)."""

    key: str
    purpose: str
    epochs: int
    caveat: str
    evidence: str


QUICK = Schedule("quick", "quick look", 5, "IPS usually loses to CE this early",
                 "it still trailed at 15 epochs: " + _measured("mnist5k", 15, "holdout"))


def fair_schedule(dataset: str) -> Schedule:
    """The comparison schedule of ``dataset``: 60 epochs on mnist5k (where IPS leads on the holdout split on
    average), 30 on the others (the length of the project's comparisons), each saying what was measured there."""
    if dataset == "mnist5k":
        return Schedule("fair", "fair comparison", 60, "where IPS leads CE on average",
                        f"{_measured('mnist5k', 60, 'holdout')}; at 30 epochs {_measured('mnist5k', 30, 'holdout')}; "
                        f"with half the pairs swapped (the default now) {_measured('mnist5k', 30, 'test', 0.5)}")
    if dataset == "digits":
        return Schedule("fair", "fair comparison", 30, "the project's comparison length",
                        f"{_measured('digits', 30, 'test')}; {_measured('digits', 30, 'test', 0.5)}")
    return Schedule("fair", "fair comparison", 30, "the project's comparison length",
                    f"not measured on {dataset}")


def schedules(dataset: str) -> tuple[Schedule, Schedule]:
    """The quick look and the fair comparison of ``dataset``."""
    return QUICK, fair_schedule(dataset)


def evidence_markdown() -> str:
    """What the project's studies measured of IPS against CE at equal epochs, one bullet per comparison, and the
    NLL of the test-split comparisons (the Guide quotes it)."""
    rows = [r for r in recorded() if r.method == "ips" and r.baseline == f"ce {r.epochs} ep"]
    bullets = [f"- {r.text()}" for r in rows]
    nll = [f"{r.dataset} (swap probability {r.swap_prob:g}) {r.nll_baseline:.3f} → {r.nll_setting:.3f}"
           for r in rows if r.split == "test" and r.nll_baseline is not None]
    return "\n".join([*bullets, f"- test-split NLL, CE → IPS (lower is better): {'; '.join(nll)}"])


def duration_text(seconds: float) -> str:
    """A rough duration: "~40 s", "~3 min", "~1.5 h"."""
    if seconds < 90:
        return f"~{max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def estimate_run_seconds(cfg: TrainConfig, runs_dir: Path, default_images_per_s: float = 1500.0) -> tuple[float, str]:
    """``estimate_seconds`` for one training config: (seconds, how it was estimated), as a study of one run."""
    setting = Setting("one run", {"method": cfg.method, "epochs": cfg.epochs, "equal_compute": cfg.equal_compute})
    spec = StudySpec("run-time-estimate", cfg.dataset, cfg.model, [cfg.seed], [setting], [],
                     {"holdout": cfg.holdout})
    return estimate_seconds(spec, runs_dir, default_images_per_s)


@functools.lru_cache(maxsize=32)
def _timed_speed(settings: tuple[tuple[str, Any], ...], device: str) -> float:
    cfg = TrainConfig(**dict(settings))
    session = build_session(cfg, load_dataset(cfg.dataset), torch.device(device))
    train_step(session)  # warm-up: first-call allocations and kernel choices
    sync = torch.cuda.synchronize if session.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        train_step(session)
    sync()
    return TIMED_STEPS * step_images(cfg) / (time.perf_counter() - start)


def measured_speed(cfg: TrainConfig) -> float:
    """Training images/s of ``cfg`` on this machine: ``TIMED_STEPS`` steps of its own training step, timed once
    per setting and device (a second or two for small_cnn on a CPU; the answer is kept)."""
    device = str(resolve_device(cfg.device))
    timed = replace(cfg, epochs=1, device=device, out="", run_id="speed", compile=False)
    return _timed_speed(tuple(asdict(timed).items()), device)


def estimate_text(settings: Mapping[str, Any], runs_dir: Path, measure: bool = True) -> tuple[str, str]:
    """(duration, how it was estimated) of one run with the Train form's ``settings`` (TrainConfig fields).

    Earlier finished runs of the setting give its speed; else ``measure`` times a few steps here; else the time
    is left unknown (the app does not time steps while it builds its page).
    """
    known = {k: v for k, v in settings.items() if k in asdict(TrainConfig())}
    try:
        cfg = TrainConfig(**{**asdict(TrainConfig()), **known})
        seconds, how = estimate_run_seconds(cfg, runs_dir)
        if how.startswith("from measured"):
            return duration_text(seconds), how
        if not measure:
            return "time: open the Train tab", "no earlier run of this setting here; its steps are timed on opening"
        speed = measured_speed(cfg)
        seconds, _ = estimate_run_seconds(cfg, runs_dir, default_images_per_s=speed)
    except (DatasetError, TypeError, ValueError, RuntimeError) as exc:
        return "time unknown", f"no estimate: {exc}"
    return duration_text(seconds), (f"timed here: {speed:.0f} training images/s of {cfg.method} over "
                                    f"{TIMED_STEPS} steps on {resolve_device(cfg.device)}")


def schedule_choices(settings: Mapping[str, Any], runs_dir: Path, measure: bool = True) -> list[tuple[str, str]]:
    """(label, key) of every schedule for these form settings: "quick look · 5 epochs · ~40 s: IPS usually ..."."""
    dataset = str(settings.get("dataset", TrainConfig().dataset))
    return [(f"{s.purpose} · {s.epochs} epochs · "
             f"{estimate_text({**settings, 'epochs': s.epochs}, runs_dir, measure)[0]}: {s.caveat}", s.key)
            for s in schedules(dataset)]
