"""Tab: Transfer: two backbones (CE and IPS by default) fine-tuned for segmentation or detection, side by side.

One test scene (picked, or random) with the ground truth and each transfer model's predicted mask or boxes drawn
over it, the two models' test metrics (from their cards, over the whole test split), and a button that launches
transfer runs for two classification checkpoints through the run manager (they appear in the Train tab's runs and,
when finished, in this tab's pickers). The shipped defaults are ``checkpoints/digit-scenes-<task>-{ce,ips}``.
"""

from __future__ import annotations

import functools
import random
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from explorer.analysis.catalog import checkpoint_folder, default_pair, list_checkpoints, public_text, weights_version
from explorer.analysis.dense import boxes_payload, mask_payload, render_boxes, render_mask, render_scene
from explorer.analysis.inputs import whole_number
from explorer.checkpoints import load_card
from explorer.data.scenes import DenseDataset, digit_scenes
from explorer.training.runs import RunManager
from explorer.transfer.checkpoints import TransferCheckpoint, load_transfer_checkpoint
from explorer.transfer.heads import TASKS
from explorer.transfer.launch import launch_transfer
from explorer.ui.binding import flatten, handler, model_handler
from explorer.ui.context import LIGHT_EVENTS, AppContext

__all__ = ["TAB_ID", "TransferLaunched", "TransferModels", "TransferView", "build", "launch_transfer_runs",
           "random_scene", "transfer_models", "transfer_predict"]

TAB_ID = "transfer"
SCALE = 4  # a 64-pixel scene is shown 256 pixels wide
SHOWN_SCORE = 0.3  # detections drawn; the payload lists every one the model keeps (score >= 0.05)


class TransferModels(NamedTuple):
    """One answer of ``transfer_models`` (or its components): the pickers of models A and B."""

    model_a: Any
    model_b: Any


class TransferView(NamedTuple):
    """One answer of ``transfer_predict`` (or its components)."""

    scene: Any
    truth: Any  # the ground truth drawn over the scene
    model_a: Any  # model A's prediction drawn
    model_b: Any
    metrics: Any
    data: Any  # the JSON of /transfer_predict


class TransferLaunched(NamedTuple):
    """One answer of ``launch_transfer_runs`` (or its components): what was queued, in words and as JSON."""

    text: Any
    data: Any


def transfer_models(ctx: AppContext, task: str) -> TransferModels:
    """The pickers for ``task``'s transfer checkpoints, set to the first of a CE and of an IPS backbone."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose {' or '.join(TASKS)}")
    choices = list_checkpoints(ctx.checkpoint_dirs, task)
    by_backbone: dict[str, str] = {}
    for _, name in choices:
        card = load_card(checkpoint_folder(name, ctx.checkpoint_dirs))
        by_backbone.setdefault(str(card.get("backbone_method")), name)
    return TransferModels(gr.Dropdown(choices, value=by_backbone.get("ce")),
                          gr.Dropdown(choices, value=by_backbone.get("ips")))


def _checkpoint(ctx: AppContext, name: str | None, task: str, slot: str) -> TransferCheckpoint:
    if not name:
        raise ValueError(f"Model {slot}: pick a transfer checkpoint of the {task} task")
    folder = checkpoint_folder(name, ctx.checkpoint_dirs)
    key = ("transfer", str(folder), str(ctx.device), *weights_version(folder))
    try:
        checkpoint = ctx.loaded.get(key, functools.partial(load_transfer_checkpoint, folder, ctx.device))
    except ValueError as exc:
        raise ValueError(f"Model {slot}: {public_text(str(exc), ctx.checkpoint_dirs)}") from None
    if checkpoint.card["task"] != task:
        raise ValueError(f"Model {slot}: {name} is a {checkpoint.card['task']} checkpoint, not a {task} one")
    return checkpoint


def _scenes(card: dict[str, Any]) -> DenseDataset:
    """The digit scenes a transfer checkpoint was trained and tested on (its card's scene settings)."""
    if card["dataset"] != "digit-scenes":
        raise ValueError(f"the app shows digit scenes only; this checkpoint was trained on {card['dataset']}")
    hyper = card["hyperparameters"]
    return digit_scenes(int(card["image_size"][0]), int(hyper["train_scenes"]), int(hyper["test_scenes"]),
                        int(hyper["scene_seed"]))


def _metrics_table(checkpoints: dict[str, TransferCheckpoint]) -> pd.DataFrame:
    rows = []
    for slot, checkpoint in checkpoints.items():
        card = checkpoint.card
        accuracy = (card["backbone_card"].get("test_metrics") or {}).get("accuracy")
        rows.append({"model": slot, "backbone": f"{card['backbone_method']} ({card['backbone_run_id']})",
                     "backbone test acc %": None if accuracy is None else round(100 * accuracy, 2),
                     **{f"{name} %": round(100 * value, 2) for name, value in card["test_metrics"].items()},
                     "epochs": card["epoch"], "frozen backbone": card["hyperparameters"]["freeze_backbone"]})
    return pd.DataFrame(rows)


def _drawn(task: str, scenes: DenseDataset, index: int, prediction: Any) -> tuple[Any, Any]:
    """The picture and payload of one model's prediction (or of the truth: ``prediction`` None)."""
    split, image = scenes.test, scenes.test.images[index]
    if task == "segmentation":
        mask = split.masks[index] if prediction is None else prediction[0]
        return render_mask(image, mask, SCALE), {"mask": mask_payload(mask)}
    if prediction is None:
        boxes, labels, scores = split.boxes[index], split.labels[index], None
    else:
        boxes, labels, scores = prediction[0]["boxes"].cpu(), prediction[0]["labels"].cpu(), prediction[0]["scores"]
    shown = slice(None) if scores is None else scores.cpu() >= SHOWN_SCORE  # the picture; the JSON has them all
    return (render_boxes(image, boxes[shown], labels[shown], scenes.class_names, SCALE,
                         None if scores is None else scores[shown]),
            {"boxes": boxes_payload(boxes, labels, scenes.class_names, scores)})


def transfer_predict(ctx: AppContext, task: str, model_a: str | None, model_b: str | None,
                     scene_index: float) -> TransferView:
    """The scene, its ground truth and both models' predictions drawn; the metrics table; the JSON."""
    checkpoints = {slot: _checkpoint(ctx, name, task, slot) for slot, name in (("A", model_a), ("B", model_b))}
    scenes = _scenes(checkpoints["A"].card)
    if _scenes(checkpoints["B"].card) is not scenes:
        raise ValueError("models A and B were trained on different digit scenes; pick two of the same scenes")
    index = whole_number(scene_index, "scene")
    if not 0 <= index < len(scenes.test):
        raise ValueError(f"scene {index} does not exist; the test split has scenes 0 to {len(scenes.test) - 1}")
    truth_picture, truth = _drawn(task, scenes, index, None)
    pictures, payload = [], {"task": task, "scene_index": index, "class_names": list(scenes.class_names),
                             "truth": truth, "models": {}}
    for slot, checkpoint in checkpoints.items():
        prediction = checkpoint.model.predict(scenes.test.images[index:index + 1].to(ctx.device))
        picture, data = _drawn(task, scenes, index, prediction)
        pictures.append(picture)
        payload["models"][slot] = {"checkpoint": model_a if slot == "A" else model_b,
                                   "backbone_method": checkpoint.card["backbone_method"],
                                   "test_metrics": checkpoint.card["test_metrics"], **data}
    return TransferView(render_scene(scenes.test.images[index], SCALE), truth_picture, *pictures,
                        _metrics_table(checkpoints), payload)


def random_scene(ctx: AppContext, model_a: str | None) -> int:
    """A random index among the test scenes of model A's checkpoint."""
    if not model_a:
        raise ValueError("Model A: pick a transfer checkpoint first")
    card = load_card(checkpoint_folder(model_a, ctx.checkpoint_dirs))
    return random.randrange(int(card.get("hyperparameters", {}).get("test_scenes", 1)))


def launch_transfer_runs(runs: RunManager, ctx: AppContext, task: str, backbone_a: str | None,
                         backbone_b: str | None, epochs: float, freeze_backbone: bool) -> TransferLaunched:
    """Transfer runs of ``task`` for both chosen classification checkpoints, queued in the run manager."""
    run_ids = []
    for slot, name in (("A", backbone_a), ("B", backbone_b)):
        if not name:
            raise ValueError(f"Backbone {slot}: pick a classification checkpoint")
        folder = checkpoint_folder(name, ctx.checkpoint_dirs)
        try:
            run_ids.append(launch_transfer(runs, {"task": task, "backbone": str(folder), "epochs": epochs,
                                                  "warmup_epochs": 1 if epochs and epochs > 1 else 0,
                                                  "freeze_backbone": bool(freeze_backbone)}))
        except ValueError as exc:
            raise ValueError(f"Backbone {slot}: {public_text(str(exc), ctx.checkpoint_dirs)}") from None
    return TransferLaunched(f"Queued {' and '.join(f'`{r}`' for r in run_ids)}: follow them in the Train tab's runs; "
                            "when they finish they are offered in this tab's pickers.", {"run_ids": run_ids})


def build(ctx: AppContext, runs: RunManager, tab: gr.Tab) -> None:
    gr.Markdown("The paper's other two tasks: a classification backbone (its trained conv layers) fine-tuned under a "
                "segmentation head (FCN) or a detection head (FCOS) on scenes of test digits never seen in training. "
                "Pick two transfer checkpoints (by default: the demo CE and IPS backbones) and a test scene. "
                f"Boxes with a score of at least {SHOWN_SCORE} are drawn; the JSON lists all of them.")
    with gr.Row(equal_height=True):
        task = gr.Radio(list(TASKS), value=TASKS[0], label="Task", scale=1)
        # any value is accepted here and checked by the handlers (checkpoint_folder): an API client may ask for the
        # other task's checkpoints than the ones this session's pickers list
        model_a, model_b = (gr.Dropdown([], label=f"Transfer model {s}", scale=2, allow_custom_value=True)
                            for s in ("A", "B"))
    with gr.Row(equal_height=True):
        scene = gr.Number(0, label="Test scene", precision=0, scale=2, elem_id="transfer-scene")
        pick = gr.Button("Random scene", scale=1)
        show = gr.Button("Show", variant="primary", scale=1)
    with gr.Row(elem_id="transfer-pictures"):
        pictures = [gr.Image(label=label, type="numpy", format="png", elem_classes="pixelated", interactive=False)
                    for label in ("scene", "ground truth", "model A", "model B")]
    metrics = gr.Dataframe(label="test metrics over the whole test split (from the model cards)", interactive=False)
    with gr.Accordion("The numbers (JSON, as the API returns them)", open=False):
        data = gr.JSON(label="transfer_predict")
    gr.Markdown("### Launch transfer runs")
    with gr.Row(equal_height=True):
        choices = ctx.checkpoint_choices()
        default_a, default_b = default_pair(ctx.checkpoint_dirs)
        backbone_a = gr.Dropdown(choices, value=default_a, label="Backbone A (classification run)", scale=2,
                                 allow_custom_value=True)  # a run finished after the page opened is not listed yet
        backbone_b = gr.Dropdown(choices, value=default_b, label="Backbone B (classification run)", scale=2,
                                 allow_custom_value=True)
        epochs = gr.Number(8, label="Epochs", precision=0, scale=1)
        freeze = gr.Checkbox(False, label="Freeze the backbone", scale=1)
    launch = gr.Button("Launch both transfer runs")
    launched, launched_data = gr.Markdown(), gr.JSON(visible=False)

    predict = model_handler(ctx, transfer_predict, small=True)
    outputs = flatten(TransferView(*pictures, metrics, data))
    pickers = flatten(TransferModels(model_a, model_b))
    tab.select(handler(transfer_models, ctx), task, pickers, api_name="transfer_models").then(
        predict, [task, model_a, model_b, scene], outputs, api_name="transfer_opened", **LIGHT_EVENTS)
    task.change(handler(transfer_models, ctx), task, pickers, api_name="transfer_task").then(
        predict, [task, model_a, model_b, scene], outputs, api_name="transfer_task_predict", **LIGHT_EVENTS)
    show.click(predict, [task, model_a, model_b, scene], outputs, api_name="transfer_predict", **LIGHT_EVENTS)
    pick.click(handler(random_scene, ctx), model_a, scene, api_name="transfer_random_scene").then(
        predict, [task, model_a, model_b, scene], outputs, api_name="transfer_random_predict", **LIGHT_EVENTS)
    launch.click(handler(launch_transfer_runs, runs, ctx), [task, backbone_a, backbone_b, epochs, freeze],
                 flatten(TransferLaunched(launched, launched_data)), api_name="launch_transfer")
