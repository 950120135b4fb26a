"""How a run computes: numeric precision (autocast, the fp16 loss scaler) and the memory layout of conv nets.

``--precision auto`` is bf16 autocast on a CUDA GPU that supports it (Ampere and later), fp32 everywhere else
(the CPU, MPS, older GPUs). bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does, and gets a
``torch.amp.GradScaler``. Autocast wraps the model's forward only: its logits are cast to fp32 before any loss, so
the cross-entropy, the KL term and the IPS teacher choice are computed in fp32 whatever the precision (CPU autocast
would otherwise run log_softmax in bf16). With ``fp32`` nothing is wrapped or cast: the CPU runs stay bit-identical
to runs made before these flags existed.

``--channels-last auto`` stores a conv net's weights and inputs NHWC on CUDA, the layout cuDNN's tensor-core
kernels use without transposing; on the CPU (where NCHW is as fast for our models) it stays off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["LAYOUTS", "PRECISIONS", "grad_scaler", "model_forward", "resolve_precision", "uses_channels_last"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAYOUTS = ("auto", "on", "off")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision ``--precision name`` means on ``device``: fp32, bf16 or fp16 (ValueError when impossible)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16 needs a GPU with bfloat16 support (compute capability 8.0 or newer), "
                         f"which {torch.cuda.get_device_name(device)} is not; use fp16 or auto")
    return name


def uses_channels_last(flag: str, device: torch.device, model: nn.Module) -> bool:
    """Whether ``--channels-last flag`` puts ``model`` in NHWC on ``device`` (auto: conv nets on CUDA)."""
    if flag not in LAYOUTS:
        raise ValueError(f"unknown --channels-last value {flag!r}; use one of {', '.join(LAYOUTS)}")
    if flag == "auto":
        return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return flag == "on"


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler: active for fp16 only (a pass-through otherwise, so the step reads the same for all)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def model_forward(model: nn.Module, normalize: Callable[[Tensor], Tensor], precision: str, device: torch.device,
                  channels_last: bool) -> Callable[[Tensor], Tensor]:
    """uint8 images -> fp32 logits: normalise, lay out, run ``model`` under autocast in ``precision``, cast back."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(images: Tensor) -> Tensor:
        inputs = normalize(images).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(inputs)
        return logits.float()

    return forward
