"""The training state of a run, saved at every epoch end so that ``--resume`` continues the run exactly.

``train_state.safetensors`` (``runfolder.TRAIN_STATE``) holds every tensor the next epoch depends on: the model's
weights and buffers (BatchNorm statistics), the optimiser's momentum buffers, the states of the run's generator
and of torch's default CPU and CUDA generators (dropout in torchvision models draws from those), the anchor
stream's undrawn indices, and the method's state under ``method.`` (``MethodContext.state``: PS-KD's buffer of
last predictions, DLB's stashed last batch and its logits). Everything else is JSON in the file's metadata: the
epoch and step, the training time so far, the precision, the optimiser's param groups, the scheduler's and the
fp16 loss scaler's state dicts.
One file, replaced atomically after the epoch's metrics record and checkpoint are written: a kill at any moment
leaves the state of one finished epoch, never a mix. Nothing is pickled, so loading it runs no code.

On the CPU a run stopped anywhere and resumed reaches bit-identical weights to the run left alone. On a GPU it
is as close as two uninterrupted GPU runs are (cuDNN's kernels are not bitwise deterministic). Under
DistributedDataParallel rank 0 saves the state and every rank restores it: all ranks draw the same global
batches, so their generators are in the same state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from explorer.checkpoints import atomic_save_tensors
from explorer.training.runfolder import TRAIN_STATE
from explorer.training.session import Session

__all__ = ["restore_train_state", "save_train_state"]

FORMAT = 1
_MODEL, _OPTIMIZER, _ANCHORS, _METHOD = "model.", "optimizer.", "anchors.buffer", "method."
_RUN_RNG, _CPU_RNG, _CUDA_RNG = "rng.run", "rng.torch_cpu", "rng.torch_cuda"


def save_train_state(s: Session, elapsed: float, last_test_accuracy: float | None) -> None:
    """Write the state after the epoch that just ended (``s.step`` steps done) into ``s.run_dir``."""
    tensors = {_MODEL + k: v for k, v in s.bare_model.state_dict().items()}
    optimizer = s.optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in optimizer["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER}{index}.{name}"] = value
            else:
                plain_state.setdefault(str(index), {})[name] = value
    tensors.update({_RUN_RNG: s.generator.get_state(), _CPU_RNG: torch.get_rng_state(),
                    _ANCHORS: s.anchors.buffer.clone()})
    tensors.update({_METHOD + name: value.contiguous() for name, value in s.context.state.items()})
    if s.device.type == "cuda":
        tensors[_CUDA_RNG] = torch.cuda.get_rng_state(s.device)
    meta = {"format": FORMAT, "epoch": s.step // s.steps_per_epoch, "step": s.step, "elapsed": elapsed,
            "last_test_accuracy": last_test_accuracy, "device_type": s.device.type, "precision": s.precision,
            "optimizer": {"param_groups": optimizer["param_groups"], "state": plain_state},
            "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict()}
    atomic_save_tensors(s.run_dir / TRAIN_STATE, tensors, {"train_state": json.dumps(meta)})


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["train_state"])
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable training state ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has training-state format {meta.get('format')}; this version reads {FORMAT}")
    return meta, tensors


def restore_train_state(s: Session) -> dict[str, Any]:
    """Load ``s.run_dir``'s training state into the freshly built session ``s``; returns its JSON part (epoch,
    step, elapsed, last_test_accuracy). A state that does not fit raises ValueError with the reason."""
    meta, tensors = _read(s.run_dir / TRAIN_STATE)
    if meta["device_type"] != s.device.type:
        raise ValueError(f"run {s.run_dir.name} trained on {meta['device_type']}, so it resumes on "
                         f"{meta['device_type']} only (its random generators differ), not on {s.device.type}")
    s.bare_model.load_state_dict({k.removeprefix(_MODEL): v for k, v in tensors.items() if k.startswith(_MODEL)})

    state: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in meta["optimizer"]["state"].items()}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER):
            index, name = key.removeprefix(_OPTIMIZER).split(".", 1)
            state.setdefault(int(index), {})[name] = value
    implementation = [{k: group[k] for k in ("foreach", "fused")} for group in s.optimizer.param_groups]
    s.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    for group, chosen in zip(s.optimizer.param_groups, implementation, strict=True):
        group.update(chosen)  # this machine's choice (fused on CUDA), not the saving machine's
        for param in group["params"]:  # each buffer in its parameter's layout: fused SGD refuses a contiguous
            buffers = s.optimizer.state.get(param, {})  # momentum beside a channels-last weight
            for name, value in buffers.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    buffers[name] = torch.empty_like(param).copy_(value)
    s.scheduler.load_state_dict(meta["scheduler"])
    if s.scaler.is_enabled() and meta["scaler"]:
        s.scaler.load_state_dict(meta["scaler"])

    s.generator.set_state(tensors[_RUN_RNG])
    torch.set_rng_state(tensors[_CPU_RNG])
    if s.device.type == "cuda":
        torch.cuda.set_rng_state(tensors[_CUDA_RNG], s.device)
    s.anchors.buffer = tensors[_ANCHORS].to(s.device)
    s.context.state = {k.removeprefix(_METHOD): v.to(s.device) for k, v in tensors.items() if k.startswith(_METHOD)}
    s.step = meta["step"]
    return meta
