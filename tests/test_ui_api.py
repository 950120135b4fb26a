"""The web app through its API: launched in this process, driven with gradio_client like any script would."""

import base64
import json
import shutil
import ssl
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explorer.analysis.pairs import class_test_index, swap_pair
from explorer.benchmarks.served import loopback_client
from explorer.checkpoints import load_checkpoint
from explorer.data import load_dataset
from explorer.evaluate import classification_metrics, predict_logits
from explorer.training.command import FORM_DEFAULTS
from explorer.training.config import RUN_ID_PATTERN
from explorer.training.runfolder import FINAL_STATES
from tests.helpers import DEMO, running_app, save_digits_run

CE, IPS = str(DEMO / "mnist5k-small_cnn-ce"), str(DEMO / "mnist5k-small_cnn-ips")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    save_digits_run(runs)
    return runs


@pytest.fixture(scope="module")
def client(runs_dir):
    with running_app(runs_dir) as url:
        yield loopback_client(url)


def test_a_loopback_client_loads_no_certificates(client, monkeypatch):
    """gradio_client makes two httpx clients per request; each loaded the CA bundle (38 ms of CPU) for plain HTTP,
    and the load benchmark timed that as the app's latency."""
    loads = []
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", lambda context, *a, **k: loads.append(a))
    assert _swap(client, seed=3)[9]["seed"] == 3
    assert loads == []


def _swap(client, **overrides):
    args = dict(upload_a=None, upload_b=None)
    args.update(overrides)
    return client.predict(**args, api_name="/swap_pair")


def test_every_tab_has_its_named_endpoint(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/swap_pair", "/random_pair", "/swap_class", "/confidence_gaps", "/gradcam", "/compare",
                 "/guide_example", "/open_gap_pair", "/open_fixed_sample", "/launch_run", "/runs", "/cancel_run",
                 "/launch_other_method", "/delete_run", "/resume_run", "/train_command", "/train_schedules",
                 "/switch_dataset", "/launch_pair"):
        assert name in endpoints


def test_swap_pair_returns_the_core_numbers_and_four_images(client):
    out = _swap(client, class_name="3", index_a=2, index_b=5, patch_size=7, swap_ratio=0.5, seed=4)
    images, captions, data = out[:4], out[4:8], out[9]
    assert all(Path(image["path"] if isinstance(image, dict) else image).suffix == ".png" for image in images)
    assert data["class"] == "3" and data["grid"] == [4, 4] and data["swapped_patches"] == 8
    assert np.array(data["mask"]).sum() == 8
    dataset = load_dataset("mnist5k")
    a, b = class_test_index(dataset, 3, 2), class_test_index(dataset, 3, 5)
    assert data["a"] == {"source": "test", "test_index": a, "rank_in_class": 2} and data["b"]["test_index"] == b
    models = {"A · ce": load_checkpoint(CE).model, "B · ips": load_checkpoint(IPS).model}
    expected = swap_pair(dataset, dataset.test_images[a], dataset.test_images[b], 3, 7, 0.5, 4, models, anchor=a)
    assert set(data["models"]) == set(models)
    for name, score in expected.scores.items():
        got = data["models"][name]
        assert got["swapped_a"] == pytest.approx(score.swapped_a, abs=1e-5)
        assert got["swapped_b"] == pytest.approx(score.swapped_b, abs=1e-5)
        assert got["kd"] == pytest.approx(score.kd, rel=1e-4) and got["teacher"] == score.teacher
        assert f"{score.swapped_a:.3f}" in captions[2]
    assert "teacher" in captions[2] + captions[3]


def test_swap_seed_and_ratio_change_the_mask(client):
    masks = {seed: np.array(_swap(client, seed=seed)[9]["mask"]) for seed in (0, 1)}
    assert not np.array_equal(masks[0], masks[1])
    assert _swap(client, swap_ratio=0.25)[9]["swapped_patches"] == 4
    assert _swap(client, patch_size=14)[9]["grid"] == [2, 2]


def test_random_pair_and_class_change_pick_valid_samples(client):
    out = client.predict(api_name="/random_pair")
    class_name, slider_a, slider_b, data = out[0], out[1], out[2], out[-1]
    assert data["class"] == class_name and slider_a["value"] != slider_b["value"]
    assert data["a"]["test_index"] == class_test_index(load_dataset("mnist5k"), int(class_name), slider_a["value"])
    out = client.predict(class_name="8", upload_a=None, upload_b=None, api_name="/swap_class")
    assert out[0] == {"maximum": 99, "value": 0, "__type__": "update"} and out[1]["value"] == 1
    assert out[-1]["class"] == "8"


def test_swap_with_uploads_converts_them_and_reports_it(client, tmp_path):
    rgba = np.zeros((90, 60, 4), np.uint8)
    rgba[15:75, 26:34, 3] = 255  # black ink on a transparent canvas
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    Image.fromarray(np.full((40, 40), 30, np.uint8)).convert("P").save(tmp_path / "palette.bmp")
    data = _swap(client, class_name="1", upload_a=handle_file(str(tmp_path / "ink.png")),
                 upload_b=handle_file(str(tmp_path / "palette.bmp")))[9]
    assert data["a"] == {"source": "upload", "file": "ink.png"} and data["b"]["source"] == "upload"
    assert any("transparency" in note for note in data["notes"])
    assert any("resized from 60x90" in note for note in data["notes"])
    assert all(0 <= m["swapped_a"] <= 1 for m in data["models"].values())


@pytest.mark.parametrize("case,message", [
    ("empty.png", "is empty"),
    ("notes.png", "not an image this app can read"),
    ("corrupt.png", "corrupt or truncated"),
    ("notes.txt", "Invalid file type"),
    ("huge.png", "megapixels are accepted"),
    ("heavy.png", "MB are accepted"),
])
def test_bad_uploads_get_a_clear_error_and_the_app_lives_on(client, tmp_path, case, message):
    path = tmp_path / case
    if case == "empty.png":
        path.write_bytes(b"")
    elif case in ("notes.png", "notes.txt"):
        path.write_text("not an image")
    elif case == "corrupt.png":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "huge.png":
        Image.new("L", (7000, 6000)).save(path)  # 42 megapixels of black: a small file
    else:  # a real PNG followed by padding: 21 MB on disk
        Image.new("L", (28, 28)).save(path)
        path.write_bytes(path.read_bytes() + b"\0" * (21 * 2**20))
    with pytest.raises(AppError, match=message):
        _swap(client, upload_a=handle_file(str(path)))
    assert _swap(client)[9]["swapped_patches"] == 8  # still serving


def test_mismatched_and_unknown_checkpoints_are_refused(client, runs_dir):
    with pytest.raises(AppError, match=r"Model A: .*does not match dataset mnist5k.*image size \(8, 8\) vs \(28, 28\)"):
        _swap(client, model_a=str(runs_dir / "digits-run"))
    with pytest.raises(AppError, match="does not match"):
        client.predict(model_b=str(runs_dir / "digits-run"), api_name="/compare")
    with pytest.raises(AppError, match="not one of the checkpoints offered here"):
        _swap(client, model_a="/etc")


def test_a_run_created_after_launch_is_usable_at_once(client, runs_dir):
    shutil.copytree(IPS, runs_dir / "fresh-run")
    data = _swap(client, model_a=str(runs_dir / "fresh-run"))[9]
    assert data["models"]["A · ips"]["checkpoint"] == f"{runs_dir.resolve().name}/fresh-run"  # its public name


def test_digits_dataset_with_its_own_checkpoint(client, runs_dir):
    out = client.predict(dataset_name="digits", model_a=str(runs_dir / "digits-run"), model_b=None,
                         api_name="/swap_dataset")
    data = out[-1]
    assert data["dataset"] == "digits" and data["image_shape"] == [1, 8, 8] and data["patch_size"] == 2
    assert list(data["models"]) == ["A · ce"]


def test_switching_the_dataset_picks_its_checkpoints(client, runs_dir):
    dataset, model_a, model_b, notice = client.predict("digits", CE, IPS, api_name="/switch_dataset")
    digits_run = f"{runs_dir.resolve().name}/digits-run"  # the public name, not the server's path
    assert dataset == "digits" and model_a["value"] == digits_run and model_b["value"] is None
    assert [value for _, value in model_a["choices"]] == [digits_run] and "no IPS checkpoint" in notice


def test_confidence_gaps_are_reproducible_and_summarised(client):
    args = dict(models="A and B", class_name="all classes", n_pairs=60, patch_size=7, swap_ratio=0.5, seed=2)
    first = client.predict(**args, api_name="/confidence_gaps")
    data = first[5]
    assert data["n_pairs"] == 60 and len(data["pairs"]["anchor"]) == 60
    for name, model_data in data["models"].items():
        conf_a = np.array(data["pairs"][name]["confidence_a"])
        conf_b = np.array(data["pairs"][name]["confidence_b"])
        assert model_data["mean_gap"] == pytest.approx(np.abs(conf_a - conf_b).mean(), abs=1e-3)
        assert 0 <= model_data["a_teaches"] <= 1
    table = first[3]
    assert len(table["data"]) == 20 and table["headers"][:3] == ["class", "test # a", "test # b"]
    again = client.predict(**args, api_name="/confidence_gaps")[5]
    assert again["pairs"] == data["pairs"]
    only_b = client.predict(**{**args, "models": "B only", "class_name": "4"}, api_name="/confidence_gaps")[5]
    assert list(only_b["models"]) == ["B · ips"] and set(only_b["pairs"]["label"]) == {4}


def test_gradcam_returns_maps_in_range_and_top3(client):
    out = client.predict(test_index=7, upload=None, method="GradCAM++", layer="block2", target="predicted class",
                         api_name="/gradcam")
    data = out[-1]
    assert data["test_index"] == 7 and data["method"] == "GradCAM++"
    for m in data["models"].values():
        assert m["layer"] == "block2" and m["cam_shape"] == [28, 28]
        assert 0.0 <= m["cam_min"] <= m["cam_mean"] <= m["cam_max"] <= 1.0
        assert m["target_class"] == m["predicted"] and len(m["top3"]) == 3
        probabilities = [p for _, p in m["top3"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
    label_a = out[3]
    assert label_a["label"] == data["models"]["A · ce"]["top3"][0][0]


def test_gradcam_errors_are_clear(client, tmp_path):
    with pytest.raises(AppError, match="make one in the Patch swap tab first"):
        client.predict(source="swapped view a′ (Patch swap tab)", upload=None, api_name="/gradcam")
    with pytest.raises(AppError, match="upload an image first"):
        client.predict(source="upload", upload=None, api_name="/gradcam")
    with pytest.raises(AppError, match="not a CAM layer"):
        client.predict(upload=None, layer="head", api_name="/gradcam")
    path = tmp_path / "seven.webp"
    Image.fromarray(np.full((50, 50, 3), 240, np.uint8)).save(path)
    data = client.predict(source="upload", upload=handle_file(str(path)), api_name="/gradcam")[-1]
    assert data["source"] == "upload" and data["true_class"] == "unknown"
    assert all(m["target_class"] == m["predicted"] for m in data["models"].values())


def test_compare_metrics_match_the_evaluate_module(client):
    out = client.predict(api_name="/compare")
    data = out[7]
    dataset = load_dataset("mnist5k")
    predictions = {}
    for name, path in (("A · ce", CE), ("B · ips", IPS)):
        logits = predict_logits(load_checkpoint(path).model, dataset, dataset.test_images)
        expected = classification_metrics(logits, dataset.test_labels)
        for key, value in expected.items():
            assert data["models"][name][key] == pytest.approx(value, abs=1e-5)
        assert sum(data["models"][name]["reliability"]["count"]) == 1000
        predictions[name] = logits.argmax(1)
    right = {name: predictions[name] == dataset.test_labels for name in predictions}
    assert data["a_wrong_b_right"] == torch.nonzero(~right["A · ce"] & right["B · ips"]).flatten().tolist()
    assert data["a_right_b_wrong"] == torch.nonzero(right["A · ce"] & ~right["B · ips"]).flatten().tolist()
    difference = np.array(data["models"]["B · ips"]["confusion"]) - np.array(data["models"]["A · ce"]["confusion"])
    assert (np.array(data["confusion_difference"]) == difference).all()
    table = out[1]
    assert [row[0] for row in table["data"]][:3] == ["accuracy (%)", "NLL", "ECE (%, 15 bins)"]
    assert [claim["metric"] for claim in data["claims"]][:3] == ["accuracy", "ece", "true_class_confidence"]
    assert all(f"- {claim['text']}" in out[0] for claim in data["claims"])
    assert table["data"][0][1] == pytest.approx(100 * data["models"]["A · ce"]["accuracy"], abs=1e-3)
    assert client.predict(api_name="/compare")[7] == data  # the cached answer is the same answer


def test_a_cached_compares_gallery_is_served_from_the_apps_own_pictures(client):
    """Gradio checked and copied every gallery picture into its cache on every answer, cached or not (about 40 of a
    repeated Compare's 71-78 ms); the cached answer's pictures are served from where the app wrote them."""
    fixed = client.predict(api_name="/compare")[5]
    dataset = load_dataset("mnist5k")
    first = fixed[0]["image"]
    assert "/ips-explorer-pictures-" in first["path"] and first["url"].endswith(first["path"])
    with urllib.request.urlopen(first["url"]) as response:  # what the browser fetches
        assert response.status == 200 and response.read() == Path(first["path"]).read_bytes()
    picture = np.asarray(Image.open(first["path"]).convert("L"))  # the first A-wrong-B-right test image, scaled up
    index = client.predict(api_name="/compare")[7]["a_wrong_b_right"][0]
    scale = picture.shape[0] // 28
    assert scale > 1 and np.array_equal(picture[::scale, ::scale], dataset.test_images[index].squeeze().numpy())


def test_guide_examples_score_a_pair(client):
    first = client.predict(api_name="/guide_first_example")[4]
    assert "teaches" in first and first == client.predict(api_name="/guide_first_example")[4]
    assert "teaches" in client.predict(api_name="/guide_example")[4]


# ---- the Train tab --------------------------------------------------------------------------------
def _runs(client) -> dict[str, dict[str, str]]:
    """The /runs table as {run id: {header: cell}}."""
    table = client.predict(api_name="/runs")
    return {row[0]: dict(zip(table["headers"], row, strict=True)) for row in table["data"]}


def _numbers(values) -> list[float]:
    """A Plotly trace's x or y as a list: arrays travel as base64 ("bdata") with their dtype."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def _wait_for_row(client, run_id: str, predicate, timeout: float, what: str) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _runs(client).get(run_id)
        if row is not None and predicate(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: timed out after {timeout} s waiting for {what}; last row {row}")


def test_train_tab_runs_cancels_and_serves_the_checkpoint_to_the_other_tabs(client, runs_dir):
    form = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/launch_run"]["parameters"]
    assert {p["parameter_name"]: p["parameter_default"] for p in form if p["parameter_name"] in FORM_DEFAULTS} == {
        name: FORM_DEFAULTS[name] for name in ("dataset", "model", "method", "epochs", "batch_size", "lr",
                                               "patch_size", "swap_ratio", "swap_prob", "temperature", "kd_weight",
                                               "seed", "equal_compute", "device", "precision", "teacher")}
    quick = client.predict(dataset="digits", method="ce", epochs=2, api_name="/launch_run")
    endless = client.predict(dataset="digits", epochs=500, api_name="/launch_run")  # the app runs 2 at once
    assert RUN_ID_PATTERN.fullmatch(quick) and quick != endless
    watched = client.predict(quick, [], [], api_name="/watch_runs")
    assert watched[-1] == {"active": True, "__type__": "update"}  # the page's timer ticks while runs train

    _wait_for_row(client, endless, lambda row: row["status"] == "running" and not row["progress"].startswith("0 %"),
                  90, "the endless run to train")
    with pytest.raises(AppError, match="is running; cancel it first"):
        client.predict(endless, api_name="/ask_delete_run")
    assert "**running**" in client.predict(endless, api_name="/cancel_run")
    _wait_for_row(client, endless, lambda row: row["status"] == "cancelled", 15, "the cancelled run to stop")
    with pytest.raises(AppError, match="--lr must be a positive number up to 10; got 1000000000000.0"):
        client.predict(dataset="digits", method="ce", epochs=1, lr=1e12, api_name="/launch_run")  # could only fail

    row = _wait_for_row(client, quick, lambda row: row["status"] in FINAL_STATES, 90, "the quick run to end")
    metrics = [json.loads(line) for line in (runs_dir / quick / "metrics.jsonl").read_text().splitlines()]
    test_accuracy = [r["test_accuracy"] for r in metrics if r["kind"] == "epoch"]
    assert row["status"] == "finished" and row["progress"] == "100 % (epoch 2/2)" and len(test_accuracy) == 2
    assert (row["method"], row["dataset"], row["device"]) == ("ce", "digits", "cpu")
    assert row["best test acc"] == f"{100 * max(test_accuracy):.1f} %" and max(test_accuracy) > 0.3  # chance: 0.1

    # its checkpoint is in the header's pickers (rescanned when they open) and works in the other tabs
    choices = [value for _, value in client.predict("digits", None, api_name="/refresh_model_b")["choices"]]
    assert f"{runs_dir.resolve().name}/{quick}" in choices and "checkpoints/mnist5k-small_cnn-ips" not in choices
    data = client.predict(dataset_name="digits", model_a=str(runs_dir / quick), model_b=None,
                          api_name="/swap_dataset")[-1]
    assert list(data["models"]) == ["A · ce"]

    # selected and plotted: the details, the curves (the demo's dashed) and a timer that stops once all ended
    deadline = time.monotonic() + 10  # the processes exit (and are reaped) a moment after their last status
    while client.predict(None, [], [], api_name="/watch_runs")[-1]["active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    table, _, details, log, plot, timer = client.predict(quick, [quick, endless], ["mnist5k-small_cnn-ips"],
                                                         api_name="/watch_runs")
    assert timer == {"active": False, "__type__": "update"}
    assert "**finished**" in details and "Model A and Model B pickers" in details and not log["visible"]
    traces = json.loads(plot["plot"])["data"]
    test_curve = next(t for t in traces if t["name"] == quick and t["yaxis"] == "y5")  # panel 5: test accuracy
    assert _numbers(test_curve["x"]) == [1, 2] and _numbers(test_curve["y"]) == pytest.approx(test_accuracy)
    assert {t["name"] for t in traces} == {quick, endless}  # the mnist5k reference is not drawn beside digits runs
    again = client.predict(quick, [quick, endless], ["mnist5k-small_cnn-ips"], api_name="/watch_runs")
    assert again[0] == again[4] == {"__type__": "update"}  # nothing changed: table and curves are not resent

    # the same settings with the other method: IPS for this baseline, nothing else changed
    ips = client.predict(quick, api_name="/launch_other_method")
    launched = [json.loads((runs_dir / run / "launch.json").read_text())["config"] for run in (quick, ips)]
    assert launched[1]["method"] == "ips" and {k: v for k, v in launched[1].items() if k not in ("method", "run_id")} \
        == {k: v for k, v in launched[0].items() if k not in ("method", "run_id")}
    client.predict(ips, api_name="/cancel_run")
    _wait_for_row(client, ips, lambda row: row["status"] == "cancelled", 15, "the IPS run to stop")

    # delete asks first, then removes the folder
    client.predict(endless, api_name="/ask_delete_run")
    assert client.predict(endless, [endless], api_name="/delete_run") == ("", [])  # unselected, unplotted
    assert endless not in _runs(client) and not (runs_dir / endless).exists()


@pytest.mark.parametrize("settings,message", [
    ({"dataset": "digits", "patch_size": 3}, r"--patch-size 3 does not divide the 8x8 images of digits"),
    ({"epochs": 0}, "--epochs must be between 1 and 100000; got 0"),
    ({"lr": -0.1}, "--lr must be a positive number"),
    ({"model": "no_such_net"}, "unknown model 'no_such_net'"),
    ({"dataset": "cifar10", "epochs": 1}, "cifar10 was not found under"),
])
def test_train_refuses_bad_settings_with_the_managers_message(client, runs_dir, settings, message):
    before = sorted(p.name for p in runs_dir.iterdir())
    with pytest.raises(AppError, match=message):
        client.predict(**settings, api_name="/launch_run")
    assert sorted(p.name for p in runs_dir.iterdir()) == before  # refused before anything was written


@pytest.mark.parametrize("endpoint", ["/cancel_run", "/ask_delete_run", "/launch_other_method"])
@pytest.mark.parametrize("run_id", ["../runs", "a/b", "..", "no-such-run"])
def test_train_refuses_run_ids_that_are_not_plain_run_folders(client, endpoint, run_id):
    message = "there is no run" if run_id == "no-such-run" else "is not a run id"
    with pytest.raises(AppError, match=message):
        client.predict(run_id, api_name=endpoint)


# ---- patch evidence, CAM faithfulness, the Study tab ----------------------------------------------
def test_the_new_sections_have_their_named_endpoints(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/patch_evidence", "/evidence_agreement", "/cam_faithfulness", "/launch_study", "/study_results",
                 "/estimate_study", "/watch_study", "/refresh_studies", "/resume_study", "/cancel_study",
                 "/export_study"):
        assert name in endpoints


def test_patch_evidence_of_the_shown_pair_through_the_api(client):
    from explorer.analysis.evidence import check_teacher, evident_mask, patch_evidence

    # an earlier test switched this client's session to digits (patch sizes 2, 4): back to mnist5k first
    client.predict(dataset_name="mnist5k", model_a=CE, model_b=IPS, api_name="/swap_dataset")
    _swap(client, class_name="8", index_a=3, index_b=7, patch_size=7, swap_ratio=0.5, seed=0)  # the session's pair
    plot, table, summary, data, slider = client.predict(model_a=CE, model_b=IPS, exchange="the k most evident "
                                                        "(towards a′)", k=5, api_name="/patch_evidence")
    dataset = load_dataset("mnist5k")
    a, b = (dataset.test_images[class_test_index(dataset, 8, rank)] for rank in (3, 7))
    for name, path in (("A · ce", CE), ("B · ips", IPS)):
        model = load_checkpoint(path).model
        evidence = patch_evidence(model, dataset, a, b, 8, 7)
        check = check_teacher(model, dataset, evidence, evident_mask(evidence, 5))
        assert np.allclose(data["models"][name]["delta_b"], evidence.delta_b.numpy(), atol=1e-12)
        assert data["models"][name]["check"]["actual_teacher"] == check.actual_teacher
        assert data["models"][name]["check"]["mask"] == check.mask.tolist()
    assert table["headers"][0] == "model" and [row[0] for row in table["data"]] == ["A · ce", "B · ips"]
    assert slider["value"] == 5 and "each model's 5 most evident positions" in summary
    assert len(json.loads(plot["plot"])["data"]) == 12  # per model and image: the image, the heat map, the outlines


def test_evidence_agreement_through_the_api(client):
    from explorer.analysis.evidence import evidence_agreement

    text, data = client.predict(models="A only", class_name="2", n_pairs=20, patch_size=7, swap_ratio=0.5, seed=4,
                                api_name="/evidence_agreement")
    dataset = load_dataset("mnist5k")
    expected = evidence_agreement(load_checkpoint(CE).model, dataset, 20, 7, 0.5, 4, label=2)
    assert list(data["models"]) == ["A · ce"] and data["models"]["A · ce"]["rate"] == pytest.approx(expected.rate)
    assert data["models"]["A · ce"]["agreements"] == expected.agreement_count and "Over 20 pairs" in text


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # inside grad-cam
def test_cam_faithfulness_through_the_api(client):
    from explorer.analysis.faithfulness import compare_faithfulness

    text, table, plot, data = client.predict(method="GradCAM", layer="block3", n_images=10, seed=1,
                                             api_name="/cam_faithfulness")
    dataset = load_dataset("mnist5k")
    models = {"A · ce": load_checkpoint(CE).model, "B · ips": load_checkpoint(IPS).model}
    expected = compare_faithfulness(models, dataset, 10, "GradCAM", "block3", seed=1)
    assert data["sentence"] == expected.sentence() and expected.sentence() in text
    assert data["models"]["B · ips"]["metrics"]["ROAD MoRF"]["per_image"] == pytest.approx(
        expected.b.morf.mean(0).tolist())
    assert "CAM share on swapped-in patches" in data["difference_b_minus_a"]
    assert [row[0] for row in table["data"]][-1] == "CAM share on swapped-in patches"
    with pytest.raises(AppError, match="choose two checkpoints"):
        client.predict(model_b=None, n_images=10, api_name="/cam_faithfulness")


def _final_record(run_dir: Path) -> dict:
    """The last epoch record of a run's metrics.jsonl, read directly."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "epoch"][-1]


def _paired(method: dict, baseline: dict) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of the per-seed differences, by hand (3 seeds: t = 4.303)."""
    from scipy.stats import t

    diffs = [method[s] - baseline[s] for s in sorted(method)]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    half = t.ppf(0.975, n - 1) * (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5 / n ** 0.5
    return mean, mean - half, mean + half


def test_a_study_launched_through_the_api_finishes_with_the_run_folders_numbers(client, runs_dir):
    from explorer.training.study import comparison_spec, save_spec

    args = dict(study_id="e2e", dataset="digits", model="small_cnn", methods=["ce", "ips"],
                comparisons=["equal-epochs", "equal-compute"], seeds=3, epochs=1, batch_size=64, lr=0.05)
    assert client.predict(**args, api_name="/estimate_study").startswith("**9 runs**: 3 settings")
    picker = client.predict(**args, api_name="/launch_study")
    assert picker["value"] == "e2e"
    with pytest.raises(AppError, match="a study 'e2e' exists already"):
        client.predict(**args, api_name="/launch_study")
    deadline = time.monotonic() + 900  # 9 short runs, two at a time, on a busy 2-core CPU
    while (data := client.predict("e2e", api_name="/study_results"))["finished"] < 9:
        assert time.monotonic() < deadline, f"the study did not finish: {data['runs']}"
        assert not any(run["state"] in ("failed", "cancelled") for run in data["runs"]), data["runs"]
        time.sleep(2)
    assert data["total"] == 9 and data["pending"] == 0 and data["active"] is False
    spec = data["study"]
    labels = [s["label"] for s in spec["settings"]]
    assert labels == ["ce 1 ep", "ips 1 ep", "ce 2 ep"]
    by_hand: dict[str, dict[str, dict[int, float]]] = {m: {label: {} for label in labels} for m in data["metrics"]}
    for run in data["runs"]:
        run_dir = runs_dir / run["run_id"]
        assert run["run_id"] == f"e2e-{run['setting'].replace(' ', '-')}-s{run['seed']}"
        assert json.loads((run_dir / "launch.json").read_text())["study"] == "e2e"
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["seed"], config["batch_size"], config["lr"]) == (run["seed"], 64, 0.05)
        record = _final_record(run_dir)
        assert record["epoch"] == (2 if run["setting"] == "ce 2 ep" else 1)
        for metric, key, scale in (("accuracy", "test_accuracy", 100), ("nll", "test_nll", 1),
                                   ("ece", "test_ece", 100), ("brier", "test_brier", 1)):
            by_hand[metric][run["setting"]][run["seed"]] = scale * record[key]
    for metric, per_setting in by_hand.items():
        for label, by_seed in per_setting.items():
            assert {v["seed"]: v["value"] for v in data["values"][metric][label]} == pytest.approx(by_seed)
    for comparison, baseline in zip(data["comparisons"], ("ce 1 ep", "ce 2 ep"), strict=True):
        assert (comparison["setting"], comparison["baseline"]) == ("ips 1 ep", baseline)
        for metric in data["metrics"]:
            got = comparison["differences"][metric]
            assert (got["mean"], got["low"], got["high"]) == pytest.approx(
                _paired(by_hand[metric]["ips 1 ep"], by_hand[metric][baseline]))
    assert len(data["sentences"]) == 2 and "Only 3 seeds" in data["sentences"][0]

    progress, runs_table, summary, comparisons, sentences, plot, timer = client.predict(  # buttons: not in the API
        "e2e", "accuracy", api_name="/watch_study")
    assert progress.startswith("**9 of 9 runs finished**") and timer == {"active": False, "__type__": "update"}
    ips = next(row for row in summary["data"] if row[0] == "ips 1 ep")
    values = list(by_hand["accuracy"]["ips 1 ep"].values())
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert ips[1] == 3 and ips[2] == f"{mean:.2f} ± {std:.2f}"
    row = next(r for r in runs_table["data"] if r[0] == "ips 1 ep" and r[1] == 1)
    assert row[3] == "finished" and row[4] == pytest.approx(round(by_hand["accuracy"]["ips 1 ep"][1], 2))
    dots = json.loads(plot["plot"])["data"][0]
    assert _numbers(dots["x"]) == pytest.approx([by_hand["accuracy"]["ips 1 ep"][s] - by_hand["accuracy"]["ce 1 ep"][s]
                                                 for s in (0, 1, 2)])
    assert sentences.count("- ") == 2 and "equal epochs" in sentences and comparisons["data"][0][0] == "equal epochs"
    markdown, csv = client.predict("e2e", api_name="/export_study")
    assert Path(csv["path"] if isinstance(csv, dict) else csv).read_text().count("\n") == 10  # header + 9 runs
    assert "| equal epochs | ips 1 ep | ce 1 ep |" in Path(markdown["path"] if isinstance(markdown, dict)
                                                         else markdown).read_text()

    # a study whose spec the CLI saved is offered too, its runs not started yet
    save_spec(comparison_spec("from-cli", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0, 1]), runs_dir)
    choices = [value for _, value in client.predict(None, api_name="/refresh_studies")["choices"]]
    assert choices[:2] == ["from-cli", "e2e"]
    assert client.predict("from-cli", "accuracy", api_name="/watch_study")[0].startswith(
        "**0 of 4 runs finished** (4 not started)")


# ---- no server path leaves the app ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_folders(tmp_path_factory) -> Path:
    """Absolute checkpoints and runs folders, as a class server gets them (--checkpoints-dir /srv/...)."""
    root = tmp_path_factory.mktemp("server-folders").resolve()
    for method in ("ce", "ips"):
        shutil.copytree(DEMO / f"mnist5k-small_cnn-{method}", root / "checkpoints" / f"mnist5k-small_cnn-{method}")
    save_digits_run(root / "runs")
    return root


def _refusal(call) -> str:
    with pytest.raises(AppError) as refusal:
        call()
    return str(refusal.value)


def test_no_server_path_leaves_the_app(server_folders):
    """Pages, API description, answers and refusals name checkpoints '<folder name>/<checkpoint>', never by path;
    and such a name is what a script sends as a model."""
    ce, ips = "checkpoints/mnist5k-small_cnn-ce", "checkpoints/mnist5k-small_cnn-ips"
    with running_app(server_folders / "runs", checkpoints_dir=server_folders / "checkpoints") as url:
        client = Client(url, verbose=False, download_files=False)
        pages = {page: httpx.get(url + page, timeout=60).text for page in ("", "config", "gradio_api/info")}
        config = json.loads(pages["config"])
        pickers = {c["props"].get("elem_id"): c["props"] for c in config["components"]}
        assert (pickers["header-model-a"]["value"], pickers["header-model-b"]["value"]) == (ce, ips)
        assert ["runs/digits-run" in str(value) for value in pickers["header-model-a"]["choices"]] == [False, False]
        swap = _swap(client, model_a=ce, model_b=ips)[9]
        assert {m["checkpoint"] for m in swap["models"].values()} == {ce, ips}
        answers = {
            "swap_pair": swap,
            "refresh_model_a": client.predict("mnist5k", ce, api_name="/refresh_model_a"),
            "gradcam": client.predict(dataset_name="mnist5k", model_a=ce, model_b=ips, test_index=7, upload=None,
                                      api_name="/gradcam")[-1],
            "confidence_gaps": client.predict(models="A and B", class_name="3", n_pairs=20, patch_size=7,
                                              swap_ratio=0.5, seed=2, api_name="/confidence_gaps")[5],
            "compare": client.predict(api_name="/compare")[7],
            "runs": client.predict(api_name="/runs"),
            "api": client.view_api(return_format="dict", print_info=False),
        }
        refusals = [_refusal(lambda value=value: _swap(client, model_a=value)) for value in (
            "checkpoints/nope", "checkpoints/..", "elsewhere/mnist5k-small_cnn-ce", str(server_folders / "runs"),
            "runs/digits-run")]  # the last: trained on digits, not on mnist5k
        refusals += [_refusal(lambda: client.predict("no-such-run", api_name="/cancel_run")),
                     _refusal(lambda: client.predict("no-such-study", api_name="/study_results"))]
        # the digits last: the session's patch sizes follow the dataset
        answers["swap_dataset"] = client.predict(dataset_name="digits", model_a="runs/digits-run", model_b=None,
                                                 api_name="/swap_dataset")[-1]
        answers["switch_dataset"] = client.predict("digits", ce, ips, api_name="/switch_dataset")
    assert answers["swap_dataset"]["models"]["A · ce"]["checkpoint"] == "runs/digits-run"
    assert answers["switch_dataset"][1]["value"] == "runs/digits-run"
    assert {m["checkpoint"] for m in answers["compare"]["models"].values()} == {ce, ips}
    assert all("not one of the checkpoints offered here" in r for r in refusals[:4]), refusals
    assert "does not match dataset mnist5k" in refusals[4] and "no run no-such-run in runs" in refusals[5]
    assert "there is no study 'no-such-study' under runs/studies" in refusals[6]
    texts = {**pages, **{name: json.dumps(answer, default=str) for name, answer in answers.items()},
             **{f"refusal {i}": text for i, text in enumerate(refusals)}}
    assert [name for name, text in texts.items() if str(server_folders.parent) in text] == []
