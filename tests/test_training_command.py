"""The one place a training command is made: settings -> config -> command, for the preview and the launch alike."""

import shlex
import sys
from pathlib import Path

import pytest

from explorer.training.command import (
    FORM_DEFAULTS,
    SettingsError,
    config_argv,
    config_from_settings,
    preview,
    resume_command,
    settings_argv,
    training_command,
)
from explorer.training.config import ConfigError, TrainConfig, parse_config


def test_the_preview_and_the_launch_command_train_the_same_config():
    settings = {**FORM_DEFAULTS, "dataset": "digits", "method": "cskd", "epochs": 7.0, "seed": 3, "lr": 0.05,
                "equal_compute": True}
    cfg = config_from_settings(settings)
    shown = shlex.split(preview(settings))
    launched = training_command(cfg)
    assert shown[:3] == ["python", "-m", "explorer.train"] and launched[:3] == [sys.executable, "-m", "explorer.train"]
    assert parse_config(shown[3:]) == parse_config(launched[3:]) == cfg
    # the preview spells only what differs from the CLI's defaults; the launch spells everything
    assert shown[3:] == ["--dataset", "digits", "--method", "cskd", "--epochs", "7", "--lr", "0.05", "--seed", "3",
                         "--equal-compute"]
    assert "--weight-decay" in launched and "--weight-decay" not in shown


def test_several_processes_train_under_torchrun_in_the_preview_the_launch_and_the_resume(tmp_path: Path):
    cfg = TrainConfig(dataset="digits")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "explorer.train"]
    assert training_command(cfg, 2)[1:7] == torchrun
    assert preview({"dataset": "digits"}, 2) == shlex.join(["python", *torchrun, "--dataset", "digits"])
    assert resume_command(tmp_path, 2) == [sys.executable, *torchrun, "--resume", str(tmp_path)]
    assert resume_command(tmp_path) == [sys.executable, "-m", "explorer.train", "--resume", str(tmp_path)]


@pytest.mark.parametrize(("settings", "message"), [
    ({"lr": None}, "--lr is empty; give it a value"),
    ({"dataset": ""}, "--dataset is empty; give it a value"),
    ({"equal_compute": "yes"}, "--equal-compute must be true or false; got 'yes'"),
    ({"out": "/tmp"}, "unknown setting(s) out;"),
])
def test_settings_that_are_no_value_are_refused_with_the_flag_named(settings, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_argv(settings)
    assert preview(settings).startswith(f"# {message}")


def test_a_value_the_cli_refuses_is_refused_with_the_clis_message():
    with pytest.raises(ConfigError, match=r"--swap-prob must be in \[0, 1\]; got 1.5"):
        config_from_settings({"swap_prob": 1.5})
    assert preview({"swap_prob": 1.5}) == "# the CLI refuses these settings: --swap-prob must be in [0, 1]; got 1.5"


def test_browser_numbers_become_the_fields_types_and_optional_empty_strings_mean_none():
    assert settings_argv({"epochs": 5.0, "preset": "", "equal_compute": False}) == ["--epochs=5", "--preset="]
    assert config_from_settings({"epochs": 5.0, "milestones": ""}).epochs == 5


def test_config_argv_spells_out_every_setting_but_resume():
    cfg = TrainConfig(resume="somewhere", milestones="")
    argv = config_argv(cfg)
    assert "--resume" not in argv and "--milestones=" in argv and "--dataset" in argv
    assert config_argv(TrainConfig(), changed_only=True) == []
