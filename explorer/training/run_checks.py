"""The checks a launch passes before anything is written: the CLI's own (through the config and the data path
the training process takes), the GPUs, the disk, the input size and the queue's limits. A mixin of
``RunManager``, which holds the state they read."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from explorer.data import Dataset, DatasetError
from explorer.data.streaming import StreamedDataset
from explorer.device import resolve_device
from explorer.models import ModelError, build_model
from explorer.training.command import config_from_settings
from explorer.training.config import ConfigError, TrainConfig
from explorer.training.loop import open_training_data
from explorer.training.methods import METHODS
from explorer.training.teacher import load_teacher

__all__ = ["DISK_MARGIN_BYTES", "LaunchChecks", "RunError"]

DISK_MARGIN_BYTES = 64 * 2**20  # logs, metrics, the temporary copy of config files


class RunError(ValueError):
    """A launch, cancel or delete that cannot be done; the message says why and is meant for the user."""


def _check_input_size(model: torch.nn.Module, name: str, dataset: Dataset | StreamedDataset) -> None:
    """``RunError`` unless ``model`` (built on the meta device) takes the dataset's images: a forward pass on the
    meta device computes shapes only, so a ViT that needs 224x224 inputs is refused at once, not after the
    dataset and the real model are loaded in the training process."""
    h, w = dataset.image_size
    try:
        with torch.no_grad():
            model.eval()(torch.empty(2, dataset.channels, h, w, device="meta"))
    except Exception as exc:  # noqa: BLE001 (models fail on shapes with any exception type)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunError(f"model {name} cannot train on the {h}x{w} images of {dataset.name} ({reason}); pick a model "
                       f"for small images, such as small_cnn or resnet18") from None


class LaunchChecks:
    """The launch checks of ``RunManager`` (its ``runs_dir``, ``max_concurrent``, queue limits and queue)."""

    def _check_queue_room(self, study: str | None) -> None:
        """RunError when one more run (of ``study``, when given) would pass the queue's limits."""
        waiting = sum("study" not in launch for launch in self._queue.values())
        if study is None and self.max_queued is not None and waiting >= self.max_queued:
            raise RunError(f"{waiting} runs are already waiting for a free training slot (at most "
                           f"{self.max_queued} here); launch this one when one of them has started")
        studies = {launch["study"] for launch in self._queue.values() if "study" in launch}
        if study is not None and study not in studies and self.max_queued_studies is not None \
                and len(studies) >= self.max_queued_studies:
            raise RunError(f"{len(studies)} studies already have runs waiting for a free training slot (at most "
                           f"{self.max_queued_studies} here); launch this study when their runs have started")

    def _checked_config(self, settings: Mapping[str, Any], gpus: Any) -> TrainConfig:
        """Every check the training CLI would make, made here with the CLI's own messages, plus GPUs and disk."""
        if isinstance(gpus, float) and gpus.is_integer():
            gpus = int(gpus)  # a number box gives 2.0 for 2
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise RunError(f"the number of GPUs must be a whole number >= 1; got {gpus!r}")
        try:
            cfg = config_from_settings(settings)
            device = resolve_device(cfg.device)
        except (ConfigError, ValueError) as exc:
            raise RunError(str(exc)) from None
        if gpus > 1 and (device.type != "cuda" or device.index is not None or torch.cuda.device_count() < gpus):
            raise RunError(f"{gpus} GPUs asked for, but {torch.cuda.device_count()} are visible here (device "
                           f"{cfg.device}); several GPUs need device auto or cuda and that many CUDA GPUs")
        if gpus > self.max_concurrent:
            raise RunError(f"a run on {gpus} GPUs needs {gpus} slots, but this app runs at most "
                           f"{self.max_concurrent} training processes at once")
        cfg = replace(cfg, data_root=str(Path(cfg.data_root).expanduser().resolve()))
        try:
            dataset = open_training_data(cfg, gpus, download=False)  # what the training process will open
            if METHODS[cfg.method].needs_teacher:  # a teacher that cannot teach: refused here, not after queueing
                load_teacher(cfg, dataset, torch.device("cpu"))
            with torch.device("meta"):  # the size of the model, without allocating it
                model = build_model(cfg.model, dataset.channels, dataset.num_classes)
        except (ConfigError, DatasetError, ModelError) as exc:
            raise RunError(str(exc)) from None
        _check_input_size(model, cfg.model, dataset)
        weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        needed = 2 * weight_bytes + DISK_MARGIN_BYTES  # the checkpoint and its temporary copy while replaced
        free = shutil.disk_usage(self.runs_dir).free
        if free < needed:
            raise RunError(f"only {free / 2**20:.0f} MiB free under {self.runs_dir.name}; a {cfg.model} run needs "
                           f"about {needed / 2**20:.0f} MiB; delete old runs or free some disk")
        return replace(cfg, out=str(self.runs_dir))
