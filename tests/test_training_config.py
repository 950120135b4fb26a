"""The training CLI's configuration: presets and explicit flags, schedules, the exact round trip of config_argv."""

from dataclasses import asdict, replace

import pytest

from explorer.training.command import config_argv
from explorer.training.config import (
    MAX_STEPS,
    ConfigError,
    TrainConfig,
    build_parser,
    milestone_epochs,
    parse_config,
    validate_config,
)
from explorer.training.methods import METHODS
from explorer.training.presets import PRESETS


def test_the_cifar100_preset_is_self_kd_libs_protocol():
    cfg = parse_config(["--preset", "cifar100-resnet18", "--method", "cskd"])
    assert (cfg.dataset, cfg.model, cfg.method) == ("cifar100", "resnet18", "cskd")
    assert (cfg.epochs, cfg.batch_size) == (200, 128)
    assert (cfg.lr, cfg.weight_decay, cfg.temperature, cfg.kd_weight) == (0.1, 5e-4, 4.0, 1.0)
    assert (cfg.schedule, cfg.milestones, cfg.gamma, cfg.warmup_epochs) == ("step", "105,155", 0.1, 5)
    assert PRESETS["cifar100-resnet18"].published == {"ce": 76.24, "ls": 78.72, "mixup": 78.68, "cutmix": 80.17,
                                                      "tfkd": 76.61, "cskd": 78.66, "pskd": 79.31, "bake": 76.93}
    for method in METHODS:  # the protocol applies to every method (kd: with its teacher)
        teacher = ["--teacher", "runs/t"] if METHODS[method].needs_teacher else []
        cfg = parse_config(["--preset", "cifar100-resnet18", "--method", method, *teacher])
        assert (cfg.method, cfg.model, cfg.epochs, cfg.milestones) == (method, "resnet18", 200, "105,155")


@pytest.mark.parametrize("flags,expected", [
    (["--epochs", "10"], {"epochs": 10, "milestones": "105,155"}),
    (["--epochs=10", "--lr=0.05"], {"epochs": 10, "lr": 0.05}),
    (["--batch-size", "128"], {"batch_size": 128}),  # given explicitly, even when equal to the default
    (["--milestones", "60,120", "--gamma", "0.2"], {"milestones": "60,120", "gamma": 0.2}),
    (["--schedule", "cosine"], {"schedule": "cosine", "milestones": ""}),  # the preset's milestones go with its steps
    (["--dataset", "digits", "--model", "small_cnn"], {"dataset": "digits", "model": "small_cnn", "epochs": 200}),
])
def test_explicit_flags_win_over_the_preset(flags, expected):
    cfg = parse_config(["--preset", "cifar100-resnet18", *flags])
    assert {k: getattr(cfg, k) for k in expected} == expected
    untouched = {k: v for k, v in PRESETS["cifar100-resnet18"].values.items() if k not in expected and
                 not (k == "milestones" and cfg.schedule == "cosine")}
    assert {k: getattr(cfg, k) for k in untouched} == untouched


@pytest.mark.parametrize("argv", [
    [],
    ["--preset", "cifar100-resnet18", "--method", "ce"],
    ["--preset", "cifar100-resnet18", "--warmup-epochs", "0", "--schedule", "cosine"],  # defaults that beat the preset
    ["--schedule", "step", "--milestones", "3,7", "--warmup-epochs", "2", "--precision", "bf16", "--compile"],
    ["--run-id", "x", "--cskd-partner-pass", "joint", "--channels-last", "off"],
])
def test_config_argv_reproduces_the_config_exactly(argv):
    cfg = parse_config(argv)
    assert parse_config(config_argv(cfg)) == cfg
    assert "--resume" not in " ".join(config_argv(cfg))


@pytest.mark.parametrize("argv,message", [
    (["--schedule", "step"], "--schedule step needs --milestones"),
    (["--milestones", "30,60"], "--milestones apply to --schedule step only; got --schedule cosine"),
    (["--schedule", "step", "--milestones", "60,30"], "--milestones must be ascending epoch numbers"),
    (["--schedule", "step", "--milestones", "0,30"], "--milestones must be ascending epoch numbers"),
    (["--schedule", "step", "--milestones", "ten"], "--milestones must be ascending epoch numbers"),
    (["--warmup-epochs", "30"], r"--warmup-epochs must be at least 0 and below --epochs \(30\); got 30"),
    (["--gamma", "0"], "--gamma must be a positive number"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--channels-last", "yes"], "invalid choice: 'yes'"),
    (["--preset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--resume", "/tmp/run", "--epochs", "5"], "--resume continues a run with the settings in its config.json; "
                                                "leave out --epochs"),
    (["--resume", "/nonexistent/run"], "--resume /nonexistent/run: not a run folder"),
])
def test_bad_schedules_and_flags_are_refused_with_one_line(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_milestones_parse_to_epochs():
    assert milestone_epochs("") == ()
    assert milestone_epochs("100, 150") == (100, 150)


def test_every_field_has_help_and_choices_hold_the_default():
    for name, value in asdict(TrainConfig()).items():
        field = TrainConfig.__dataclass_fields__[name]
        assert field.metadata["help"], name
        choices = field.metadata["choices"]
        assert choices is None or value in choices, name


@pytest.mark.parametrize("argv,message", [
    (["--seed", str(2**70)], r"--seed must be a whole number between 0 and 2\^63 - 1; got 1180591620717411303424"),
    (["--seed", "-1"], "--seed must be a whole number between 0"),
    (["--lr", "1e300"], "--lr must be a positive number up to 10; got 1e[+]?300"),
    (["--lr", "nan"], "--lr must be a positive number up to 10; got nan"),
    (["--temperature", "1e-300"], "--temperature must be between 0.1 and 100; got 1e-300"),
    (["--kd-weight", "1e308"], "--kd-weight must be between 0 and 1000; got 1e[+]?308"),
    (["--weight-decay", "inf"], "--weight-decay must be between 0 and 1; got inf"),
    (["--epochs", str(10**9)], "--epochs must be between 1 and 100000; got 1000000000"),
    (["--batch-size", str(10**9)], "--batch-size must be between 2 and 65536; got 1000000000"),
])
def test_settings_that_can_only_fail_are_refused_with_their_range(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_the_dataset_bounds_the_batch_and_the_run_length():
    cfg = parse_config(["--dataset", "digits", "--batch-size", "2000"])
    with pytest.raises(ConfigError, match="2000 anchors per step, more than the 1437 training images of digits"):
        validate_config(cfg, (8, 8), "digits", train_size=1437)
    long = parse_config(["--dataset", "digits", "--batch-size", "2", "--epochs", "100000"])
    with pytest.raises(ConfigError, match=f"is 71900000 steps; a run may take at most {MAX_STEPS} "
                                          r"\(at most 2781 epochs here\)"):
        validate_config(long, (8, 8), "digits", train_size=1437)
    validate_config(parse_config(["--dataset", "digits", "--batch-size", "2", "--epochs", "2781"]), (8, 8),
                    "digits", train_size=1437)
    # --equal-compute halves the anchors, not the steps: the loop still does ceil(N / B) steps per epoch
    halved = parse_config(["--dataset", "digits", "--method", "ips", "--equal-compute", "--batch-size", "4",
                           "--epochs", "5555"])
    validate_config(halved, (8, 8), "digits", train_size=1437)  # 5555 x 360 steps
    with pytest.raises(ConfigError, match=r"is 2000160 steps; .* \(at most 5555 epochs here\)"):
        validate_config(replace(halved, epochs=5556), (8, 8), "digits", train_size=1437)


def test_the_help_offers_the_presets_but_no_empty_one_which_a_form_may_still_send():
    help_text = build_parser().format_help()
    assert "--preset {cifar100-resnet18}" in help_text and "{," not in help_text  # it once showed {,cifar100-resnet18}
    assert parse_config(["--preset="]) == parse_config([])  # the Train tab's "no preset"
