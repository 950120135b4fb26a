"""Precision, memory layout and compilation of a run, on the CPU (the GPU side is in test_cuda.py)."""

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from explorer.ips import ips_loss
from explorer.models import build_model
from explorer.training.config import parse_config
from explorer.training.loop import main, setup, train_step
from explorer.training.precision import grad_scaler, model_forward, resolve_precision, uses_channels_last

CPU = torch.device("cpu")


def test_auto_is_fp32_on_the_cpu_and_explicit_choices_stay():
    assert resolve_precision("auto", CPU) == "fp32"
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)
    conv, linear = build_model("small_cnn", 1, 10), nn.Linear(4, 2)
    assert not uses_channels_last("auto", CPU, conv) and uses_channels_last("on", CPU, conv)
    assert not uses_channels_last("off", CPU, conv) and not uses_channels_last("auto", CPU, linear)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_forward_runs_in_low_precision_and_the_losses_in_fp32(digits, precision):
    model = build_model("small_cnn", 1, 10)
    seen = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    forward = model_forward(model, digits.normalize, precision, CPU, channels_last=False)
    logits = forward(digits.train_images[:16])
    assert seen == [{"bf16": torch.bfloat16, "fp16": torch.float16}[precision]] and logits.dtype == torch.float32
    out = ips_loss(logits[:8], logits[8:], digits.train_labels[:8])
    assert out.total.dtype == out.kd_per_pair.dtype == out.confidence_a.dtype == torch.float32


def test_fp32_adds_no_cast_and_channels_last_reaches_the_model():
    model = build_model("small_cnn", 3, 10).to(memory_format=torch.channels_last)
    nhwc_inputs = []
    model.block1.register_forward_pre_hook(lambda m, args: nhwc_inputs.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    normalize = lambda x: x.float() / 255  # noqa: E731
    plain = model_forward(model, normalize, "fp32", CPU, channels_last=False)(images)
    nhwc = model_forward(model, normalize, "fp32", CPU, channels_last=True)(images)
    assert nhwc_inputs == [False, True]
    assert torch.equal(plain, model(normalize(images)))  # fp32: exactly the bare model's logits, no cast
    assert torch.allclose(plain, nhwc, atol=1e-5)


@pytest.mark.parametrize("precision,method", [("bf16", "ips"), ("fp16", "ce")])  # slow on a CPU: one epoch each
def test_a_low_precision_run_on_the_cpu_trains_and_records_its_precision(tmp_path, precision, method):
    assert main(["--dataset", "digits", "--method", method, "--epochs", "1", "--precision", precision,
                 "--out", str(tmp_path), "--run-id", "p"]) == 0
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    card = json.loads((tmp_path / "p" / "card.json").read_text())
    assert config["precision"] == precision and config["precision_used"] == precision
    assert card["hyperparameters"]["precision"] == precision
    assert card["test_metrics"]["accuracy"] > 0.3  # one epoch on digits, well above chance (0.1)
    with safe_open(str(tmp_path / "p" / "train_state.safetensors"), framework="pt") as f:
        scaler = json.loads(f.metadata()["train_state"])["scaler"]
    assert (scaler == {}) == (precision == "bf16")  # bf16 needs no loss scaling: no scaler state to resume
    if precision == "fp16":
        assert scaler["scale"] > 0


def test_the_fp16_loss_scaler_is_active_only_in_fp16(digits):
    base = ["--dataset", "digits", "--device", "cpu"]
    fp16, fp32 = setup(parse_config([*base, "--precision", "fp16"])), setup(parse_config(base))
    assert fp16.scaler.is_enabled() and not fp32.scaler.is_enabled() and fp32.precision == "fp32"
    assert {p: grad_scaler(p, CPU).is_enabled() for p in ("fp32", "bf16", "fp16")} == \
        {"fp32": False, "bf16": False, "fp16": True}
    scale = fp16.scaler.get_scale()
    train_step(fp16)
    assert fp16.scaler.get_scale() in (scale, scale / 2)  # unchanged, or halved after an overflow


def test_compile_wraps_the_model_and_keeps_the_bare_one_for_checkpoints():
    s = setup(parse_config(["--dataset", "digits", "--device", "cpu", "--compile"]))
    assert type(s.model).__name__ == "OptimizedModule" and s.model._orig_mod is s.bare_model
    assert set(s.bare_model.state_dict()) == set(build_model("small_cnn", 1, 10).state_dict())
