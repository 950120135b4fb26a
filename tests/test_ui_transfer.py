"""The Transfer tab through its API (gradio_client), on the shipped transfer checkpoints."""

import json
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from explorer.benchmarks.served import loopback_client
from explorer.data.scenes import digit_scenes
from explorer.transfer.checkpoints import load_transfer_checkpoint
from tests.helpers import DEMO, running_app

SEG = {m: f"checkpoints/digit-scenes-segmentation-{m}" for m in ("ce", "ips")}
DET = {m: f"checkpoints/digit-scenes-detection-{m}" for m in ("ce", "ips")}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def client(runs_dir):
    with running_app(runs_dir) as url:
        yield loopback_client(url)


def _predict(client, task, models, scene_index):
    return client.predict(task=task, model_a=models["ce"], model_b=models["ips"], scene_index=scene_index,
                          api_name="/transfer_predict")


def test_the_tab_offers_the_shipped_ce_and_ips_transfer_models_per_task(client):
    for task, models in (("segmentation", SEG), ("detection", DET)):
        a, b = client.predict(task=task, api_name="/transfer_models")
        assert (a["value"], b["value"]) == (models["ce"], models["ips"])
        assert [name for _, name in a["choices"]] == [models["ce"], models["ips"]]


def test_segmentation_returns_masks_as_class_indices_the_models_predict(client):
    out = _predict(client, "segmentation", SEG, 7)
    data = out[-1]
    scenes = digit_scenes()
    assert data["scene_index"] == 7 and data["truth"]["mask"] == scenes.test.masks[7].long().tolist()
    for slot, method in (("A", "ce"), ("B", "ips")):
        model = load_transfer_checkpoint(DEMO / f"digit-scenes-segmentation-{method}").model
        assert data["models"][slot]["mask"] == model.predict(scenes.test.images[7:8])[0].tolist()
        assert data["models"][slot]["backbone_method"] == method
    assert len(out) == 6 and all(Path(p["path"] if isinstance(p, dict) else p).suffix == ".png" for p in out[:4])


def test_detection_returns_boxes_with_classes_and_scores(client):
    data = _predict(client, "detection", DET, 11)[-1]
    scenes = digit_scenes()
    truth = data["truth"]["boxes"]
    assert [t["box"] for t in truth] == scenes.test.boxes[11].tolist()
    assert [t["class"] for t in truth] == scenes.test.labels[11].tolist() and "score" not in truth[0]
    model = load_transfer_checkpoint(DEMO / "digit-scenes-detection-ips").model
    expected = model.predict(scenes.test.images[11:12])[0]
    boxes = data["models"]["B"]["boxes"]
    assert [b["class"] for b in boxes] == expected["labels"].tolist()
    assert [b["score"] for b in boxes] == pytest.approx(expected["scores"].tolist(), abs=1e-4)
    assert all(b["class_name"] == str(b["class"]) for b in boxes)
    assert data["models"]["B"]["test_metrics"].keys() == {"map", "map_50", "map_75"}


def test_a_classifier_or_another_task_s_model_is_refused_in_words(client):
    with pytest.raises(AppError, match="not one of the checkpoints offered here|not a transfer checkpoint"):
        client.predict(task="segmentation", model_a="checkpoints/mnist5k-small_cnn-ce", model_b=SEG["ips"],
                       scene_index=0, api_name="/transfer_predict")
    with pytest.raises(AppError, match="is a detection checkpoint, not a segmentation one"):
        client.predict(task="segmentation", model_a=DET["ce"], model_b=SEG["ips"], scene_index=0,
                       api_name="/transfer_predict")
    with pytest.raises(AppError, match="scene 500 does not exist"):
        _predict(client, "segmentation", SEG, 500)


def test_a_scene_index_with_a_fraction_is_refused_not_truncated(ctx):
    from explorer.ui.transfer import transfer_predict

    with pytest.raises(ValueError, match="scene must be a whole number; got '2.5'"):  # int() drew scene 2
        transfer_predict(ctx, "segmentation", SEG["ce"], SEG["ips"], 2.5)


def test_launch_queues_one_transfer_run_per_backbone_in_the_run_manager(client, runs_dir):
    text, data = client.predict(task="detection", backbone_a="checkpoints/mnist5k-small_cnn-ce",
                                backbone_b="checkpoints/mnist5k-small_cnn-ips", epochs=1, freeze_backbone=True,
                                api_name="/launch_transfer")
    assert len(data["run_ids"]) == 2 and all(r in text for r in data["run_ids"])
    for run_id, method in zip(data["run_ids"], ("ce", "ips"), strict=True):
        launch = json.loads((runs_dir / run_id / "launch.json").read_text())
        assert launch["command"][1:3] == ["-m", "explorer.transfer"] and "--freeze-backbone" in launch["command"]
        assert launch["config"]["method"] == f"detection:{method}" and launch["config"]["epochs"] == 1
    with pytest.raises(AppError, match="Backbone A"):
        client.predict(task="detection", backbone_a=None, backbone_b="checkpoints/mnist5k-small_cnn-ips", epochs=1,
                       freeze_backbone=False, api_name="/launch_transfer")
    with pytest.raises(AppError, match="Backbone A: --epochs must be"):  # the app's words, not Gradio's minimum
        client.predict(task="detection", backbone_a="checkpoints/mnist5k-small_cnn-ce",
                       backbone_b="checkpoints/mnist5k-small_cnn-ips", epochs=0, freeze_backbone=False,
                       api_name="/launch_transfer")
    with pytest.raises(AppError, match="scene -1 does not exist"):
        _predict(client, "segmentation", SEG, -1)


def test_the_handlers_answer_named_records(ctx):
    """Called directly: each field holds what its name says (the API answers the same values flattened)."""
    from explorer.ui.transfer import transfer_models, transfer_predict

    pickers = transfer_models(ctx, "segmentation")
    assert (pickers.model_a.value, pickers.model_b.value) == (SEG["ce"], SEG["ips"])
    view = transfer_predict(ctx, "segmentation", SEG["ce"], SEG["ips"], 3)
    assert view.data["scene_index"] == 3 and list(view.metrics["model"]) == ["A", "B"]
    assert view.scene.shape == view.truth.shape == view.model_a.shape == view.model_b.shape
    assert view.data["models"]["B"]["backbone_method"] == "ips"
