"""The header's plain functions: the model lists follow the dataset, and a switch picks that dataset's models."""

import shutil

import pytest
import torch

from explorer.analysis.catalog import list_checkpoints
from explorer.checkpoints import load_card, save_checkpoint
from explorer.models import build_model
from explorer.ui.context import AppContext
from explorer.ui.header import (
    dataset_checkpoints,
    dataset_choices,
    missing_methods,
    notice_text,
    pick_models,
    refresh_datasets,
    refresh_models,
    switch_dataset,
    train_label,
)
from tests.helpers import CE_DEMO, CSKD_DEMO, DEMO, IPS_DEMO, save_digits_run

# the pickers' values: public names, "<checkpoints folder name>/<checkpoint folder name>", not server paths
CE, CSKD, IPS = (f"checkpoints/{folder.name}" for folder in (CE_DEMO, CSKD_DEMO, IPS_DEMO))


@pytest.fixture()
def ctx(tmp_path) -> AppContext:
    save_digits_run(tmp_path)  # a CE checkpoint of the 8x8 digits in the runs folder
    return AppContext(tmp_path, DEMO, torch.device("cpu"))


def _values(dropdown) -> list[str]:
    return [value for _, value in dropdown.choices]


def test_the_checkpoints_of_a_dataset_are_those_trained_on_it(ctx):
    mnist = dataset_checkpoints(ctx, "mnist5k")
    assert [(path, method) for _, path, method in mnist] == [(CE, "ce"), (CSKD, "cskd"), (IPS, "ips")]
    digits = dataset_checkpoints(ctx, "digits")
    assert [(path, method) for _, path, method in digits] == [(f"{ctx.runs_dir.name}/digits-run", "ce")]
    assert dataset_checkpoints(ctx, "cifar10") == []
    assert dataset_choices(ctx) == [("mnist5k · 3 checkpoints", "mnist5k"), ("digits · 1 checkpoint", "digits")]


def test_a_switch_keeps_models_that_fit_and_else_picks_the_baseline_and_ips(ctx):
    mnist = dataset_checkpoints(ctx, "mnist5k")
    assert pick_models(mnist, None, None) == (CE, IPS)
    assert pick_models(mnist, CSKD, CE) == (CSKD, CE)  # chosen and fitting: kept
    digits_run = f"{ctx.runs_dir.name}/digits-run"
    assert pick_models(dataset_checkpoints(ctx, "digits"), CE, IPS) == (digits_run, None)


def test_switching_to_digits_offers_only_its_checkpoints_and_says_what_is_missing(ctx):
    dataset, model_a, model_b, notice, button, shown = switch_dataset(ctx, "digits", CE, IPS, "mnist5k")
    digits_run = f"{ctx.runs_dir.name}/digits-run"
    assert dataset == "digits" and shown == "digits"
    assert _values(model_a) == _values(model_b) == [digits_run]
    assert (model_a.value, model_b.value) == (digits_run, None)  # the mnist5k models are not kept
    assert "no IPS checkpoint trained on **digits**" in notice and "Train tab" in notice
    assert button.visible and button.value.startswith("Train IPS on digits (~")
    back = switch_dataset(ctx, "mnist5k", digits_run, None, "digits")
    assert (back.model_a.value, back.model_b.value, back.notice, back.train_pair.visible) == (CE, IPS, "", False)
    assert _values(back.model_a) == [CE, CSKD, IPS]


def test_a_dataset_without_checkpoints_offers_to_train_both(ctx):
    shutil.rmtree(ctx.runs_dir / "digits-run")
    _, model_a, model_b, notice, button, _ = switch_dataset(ctx, "digits", CE, IPS, "mnist5k")
    assert (model_a.value, model_b.value, model_a.choices) == (None, None, [])
    assert notice.startswith("There is no checkpoint trained on **digits** here yet: train CE and IPS")
    assert button.value.startswith("Train CE and IPS on digits (~") and missing_methods([]) == ["ce", "ips"]
    assert train_label(ctx, "mnist5k", dataset_checkpoints(ctx, "mnist5k")) is None
    assert notice_text("mnist5k", dataset_checkpoints(ctx, "mnist5k")) == ""


def test_the_training_button_says_when_the_machine_is_busy(ctx, monkeypatch):
    """It promised ~15 s / ~55 s and took 46.5 s / 108.5 s at load 7: the estimate says the load, in the Study
    tab's words (``busy_note``)."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (1.0, 1.0, 1.0))
    idle = train_label(ctx, "digits", dataset_checkpoints(ctx, "digits"))
    assert idle.startswith("Train IPS on digits (~") and idle.endswith(")") and "busy" not in idle
    monkeypatch.setattr("os.getloadavg", lambda: (7.0, 1.0, 1.0))
    busy = train_label(ctx, "digits", dataset_checkpoints(ctx, "digits"))
    assert busy == f"{idle[:-1]}; this machine is busy now (load average 7.0 on 2 cores), so it will take longer)"


def test_a_dataset_that_cannot_be_opened_is_refused_and_the_previous_one_stays(ctx):
    with pytest.warns(UserWarning, match="cifar10 cannot be opened here"):
        dataset, model_a, model_b, _, _, shown = switch_dataset(ctx, "cifar10", CE, IPS, "mnist5k")
    assert (dataset, model_a.value, model_b.value, shown) == ("mnist5k", CE, IPS, "mnist5k")
    with pytest.raises(ValueError, match="unknown dataset"):
        switch_dataset(ctx, "nope", CE, IPS, None)


def test_a_picker_rescans_the_disk_for_the_datasets_checkpoints(ctx):
    assert _values(refresh_models(ctx, "digits", None)) == [f"{ctx.runs_dir.name}/digits-run"]
    shutil.copytree(IPS_DEMO, ctx.runs_dir / "new-ips")  # a run that finished since
    refreshed = refresh_models(ctx, "mnist5k", CE)
    assert f"{ctx.runs_dir.name}/new-ips" in _values(refreshed) and refreshed.value == CE


def test_a_checkpoint_with_a_malformed_card_is_listed_as_unreadable_and_breaks_no_picker(ctx):
    """Added while the app runs: a run folder whose card says its test accuracy is "high"."""
    card = {**load_card(CE_DEMO), "test_metrics": {"accuracy": "high"}}
    save_checkpoint(ctx.runs_dir / "bad-card", build_model("small_cnn", 1, 10), card)
    bad = f"{ctx.runs_dir.name}/bad-card"
    assert (f"{bad} (unreadable card)", bad) in list_checkpoints(ctx.checkpoint_dirs)
    assert bad not in _values(refresh_models(ctx, "mnist5k", CE))  # not offered: picking it could only fail
    assert ("mnist5k · 3 checkpoints", "mnist5k") in refresh_datasets(ctx, "mnist5k").choices
    assert switch_dataset(ctx, "digits", CE, IPS, "mnist5k").model_a.value == f"{ctx.runs_dir.name}/digits-run"
