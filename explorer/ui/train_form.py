"""The Train tab's launch form: settings, schedules by purpose with this machine's time, the CLI command.

Split from ``train.py`` (the runs panel) to keep each module readable. The form's values are ``TrainConfig``
fields; defaults come from ``explorer.training.command.FORM_DEFAULTS`` (the CLI's, 5 epochs), never written here.
The command line under the form is ``explorer.training.command.preview`` of the settings, the module that builds
every launch, so what it shows is what runs (or the CLI's own refusal); it lists only the flags that differ from
the CLI's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import torch

from explorer.analysis.catalog import checkpoint_folder, checkpoint_name
from explorer.analysis.schedules import estimate_text, fair_schedule, schedule_choices, schedules
from explorer.data import DATASETS
from explorer.training.command import FORM_DEFAULTS, preview
from explorer.training.config import field_help
from explorer.training.methods import METHODS
from explorer.training.precision import PRECISIONS
from explorer.training.runfolder import CONFIG, STATUS, read_json
from explorer.training.runs import RunManager
from explorer.ui.binding import flatten, handler
from explorer.ui.components import choice_dropdown
from explorer.ui.context import AppContext

__all__ = ["CUSTOM", "NO_TEACHER", "Form", "FormFields", "MethodChoice", "apply_schedule", "build_form", "command_line",
           "launch_run", "schedule_of", "show_method", "show_schedules", "teacher_choices"]

CUSTOM = "custom"  # the schedule choice when the epochs are none of the presets'
# The teacher picker's choice when no teacher is chosen: a value, so API clients may leave the parameter out
NO_TEACHER = ("none", "")
# imagefolder:PATH is left to the CLI: from a browser it would train on (and then show) any folder of the server
TRAIN_DATASETS = [name for name in DATASETS if ":" not in name]
_KD_FLAG_USERS = ", ".join(m.label for m in METHODS.values() if m.uses_kd_flags) + " (the others: official values)"


class MethodChoice(NamedTuple):
    """One answer of ``show_method`` (or its components): the method picker, the teacher picker."""

    method: Any
    teacher: Any


class FormFields(NamedTuple):
    """The form's fields (or their values), in ``launch_run``'s and ``command_line``'s parameter order."""

    dataset: Any
    model: Any
    method: Any
    epochs: Any
    batch_size: Any
    lr: Any
    patch_size: Any
    swap_ratio: Any
    swap_prob: Any
    temperature: Any
    kd_weight: Any
    seed: Any
    equal_compute: Any
    device: Any
    gpus: Any
    precision: Any
    teacher: Any
    executor: Any


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------
def _settings(dataset: str, model: str, method: str, epochs: float, batch_size: float, lr: float, patch_size: float,
              swap_ratio: float, swap_prob: float, temperature: float, kd_weight: float, seed: float,
              equal_compute: bool, device: str, precision: str, teacher: str = "") -> dict[str, Any]:
    return dict(dataset=dataset, model=model, method=method, epochs=epochs, batch_size=batch_size, lr=lr,
                patch_size=patch_size, swap_ratio=swap_ratio, swap_prob=swap_prob, temperature=temperature,
                kd_weight=kd_weight, seed=seed, equal_compute=equal_compute, device=device, precision=precision,
                teacher=teacher or "")


def launch_run(runs: RunManager, dataset: str, model: str, method: str, epochs: float, batch_size: float, lr: float,
               patch_size: float, swap_ratio: float, swap_prob: float, temperature: float, kd_weight: float,
               seed: float, equal_compute: bool, device: str, gpus: float,
               precision: str = FORM_DEFAULTS["precision"], teacher: str = "", executor: str = "local") -> str:
    """Launch a run with the form's settings, here or on SLURM (``executor``, when the app has a SLURM executor);
    returns its id (RunError, i.e. a refusal -> gr.Error). ``teacher`` is a finished run's public name
    (``<runs folder>/<run id>``), from the teacher picker."""
    if teacher and METHODS[method].needs_teacher:
        teacher = str(checkpoint_folder(teacher, [runs.runs_dir]))
    settings = _settings(dataset, model, method, epochs, batch_size, lr, patch_size, swap_ratio, swap_prob,
                         temperature, kd_weight, seed, equal_compute, device, precision,
                         teacher if METHODS[method].needs_teacher else "")
    return runs.launch(settings, gpus, executor=executor)


def command_line(dataset: str, model: str, method: str, epochs: float, batch_size: float, lr: float,
                 patch_size: float, swap_ratio: float, swap_prob: float, temperature: float, kd_weight: float,
                 seed: float, equal_compute: bool, device: str, gpus: float,
                 precision: str = FORM_DEFAULTS["precision"], teacher: str = "", executor: str = "local") -> str:
    """The training CLI command of the form's settings, as ``explorer.training.command`` builds every launch
    (``executor``: here, or sent to SLURM with the app's --slurm-* options)."""
    settings = _settings(dataset, model, method, epochs, batch_size, lr, patch_size, swap_ratio, swap_prob,
                         temperature, kd_weight, seed, equal_compute, device, precision,
                         teacher if METHODS[method].needs_teacher else "")
    return preview(settings, int(gpus) if gpus and gpus > 1 else 1, executor)


def teacher_choices(runs_dir: Path) -> list[tuple[str, str]]:
    """The finished runs of ``runs_dir``, newest first, as (label, public name): the kd teacher picker's choices."""
    choices = []
    folders = [d for d in Path(runs_dir).iterdir() if d.is_dir() and not d.is_symlink()] if runs_dir.is_dir() else []
    for run_dir in sorted(folders, key=lambda d: d.name, reverse=True):
        if read_json(run_dir / STATUS).get("state") == "finished":
            config = read_json(run_dir / CONFIG)
            label = f"{run_dir.name} ({config.get('method', '?')}, {config.get('model', '?')} on " \
                    f"{config.get('dataset', '?')})"
            choices.append((label, checkpoint_name(run_dir)))
    return choices


def show_method(ctx: AppContext, method: str) -> MethodChoice:
    """The method picker's description of the chosen method; the teacher picker, listing the finished runs, shown
    for a method that distils from a teacher (kd)."""
    chosen = METHODS.get(method)
    if chosen is None:
        return MethodChoice(gr.skip(), gr.skip())
    needs = chosen.needs_teacher
    return MethodChoice(gr.Dropdown(info=chosen.help),
                        gr.Dropdown(choices=[NO_TEACHER, *(teacher_choices(ctx.runs_dir) if needs else [])],
                                    visible=needs))


def apply_schedule(schedule: str, dataset: str) -> Any:
    """A chosen schedule sets the epochs (custom leaves them)."""
    return next((s.epochs for s in schedules(dataset) if s.key == schedule), gr.skip())


def schedule_of(epochs: float | None, dataset: str) -> str:
    """Typed epochs select the schedule they match, else "custom"."""
    return next((s.key for s in schedules(dataset) if epochs is not None and s.epochs == epochs), CUSTOM)


def _schedule_info(dataset: str, how: str) -> str:
    quick, fair = schedules(dataset)
    return (f"IPS needs a long enough schedule. Measured by the project: {quick.purpose}: {quick.evidence}. "
            f"{fair.purpose}: {fair.evidence}. Times: {how}")


def show_schedules(ctx: AppContext, dataset: str, model: str, method: str, equal_compute: bool, epochs: float | None,
                   measure: bool = True) -> gr.Radio:
    """The schedules of the form's dataset, labelled with the time each takes here for its model and method
    (``measure``: time a few steps when no earlier run tells the speed); the one the epochs match is chosen."""
    settings = {"dataset": dataset, "model": model, "method": method, "equal_compute": equal_compute}
    how = estimate_text({**settings, "epochs": fair_schedule(dataset).epochs}, ctx.runs_dir, measure)[1]
    return gr.Radio(choices=[*schedule_choices(settings, ctx.runs_dir, measure), (CUSTOM, CUSTOM)],
                    value=schedule_of(epochs, dataset), info=_schedule_info(dataset, how),
                    render=False)  # an update, also when the form calls it while it is laid out


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
@dataclass
class Form:
    """The launch form."""

    fields: FormFields
    launch: gr.Button
    schedule: gr.Radio
    command: gr.Code


def _device_choices() -> list[str]:
    """auto, cpu and the accelerators this machine has."""
    choices = ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def build_form(ctx: AppContext, slurm: bool = False) -> Form:
    """The form's components (the schedules' times are filled in when the tab opens); ``slurm``: the app has a
    SLURM executor, and the form offers to send the run there."""
    d = FORM_DEFAULTS
    gpu_count = torch.cuda.device_count()
    with gr.Row(equal_height=True):
        dataset = choice_dropdown(TRAIN_DATASETS, value=d["dataset"], label="Dataset",
                                  info="cifar10/100 need their files under data/", elem_id="train-dataset")
        model = gr.Dropdown(["small_cnn", "resnet18"], value=d["model"], label="Model", allow_custom_value=True,
                            info="or a torchvision classification model's name")
        method = choice_dropdown([(m.label, m.name) for m in METHODS.values()], value=d["method"], label="Method",
                                 info=METHODS[d["method"]].help, elem_id="train-method")
        device = choice_dropdown(_device_choices(), value=d["device"], label="Device",
                                 info="auto: CUDA when present, else CPU")
        precision = choice_dropdown(list(PRECISIONS), value=d["precision"], label="Precision",
                                    elem_id="train-precision",
                                    info="auto: bf16 on a GPU that has it, else fp32; fp16 scales the loss")
    schedule = show_schedules(ctx, d["dataset"], d["model"], d["method"], d["equal_compute"], d["epochs"],
                              measure=False)
    schedule = gr.Radio(schedule.choices, value=schedule.value, info=schedule.info, label="Schedule",
                        elem_id="train-schedule")
    with gr.Row(equal_height=True):
        epochs = gr.Number(d["epochs"], precision=0, label="Epochs", elem_id="train-epochs")
        batch_size = gr.Number(d["batch_size"], precision=0, label="Batch size", info="anchors per step")
        lr = gr.Number(d["lr"], label="Learning rate", info="peak; cosine decay to 0")
        seed = gr.Number(d["seed"], precision=0, label="Seed")
        equal_compute = gr.Checkbox(d["equal_compute"], label="Equal compute",
                                    info=field_help("equal_compute"))
        teacher = gr.Dropdown([NO_TEACHER], value="", label="Teacher (kd)", visible=METHODS[d["method"]].needs_teacher,
                              info="a finished run whose model teaches: any model, same classes and image size",
                              elem_id="train-teacher")
    with gr.Row(equal_height=True):
        patch_size = gr.Number(d["patch_size"], precision=0, label="Patch size (pixels)",
                               info="IPS; 0: auto; must divide the image size")
        swap_ratio = gr.Slider(0, 1, value=d["swap_ratio"], step=0.05, label="Swap ratio",
                               info=field_help("swap_ratio"))
        swap_prob = gr.Slider(0, 1, value=d["swap_prob"], step=0.05, label="Swap probability",
                              info=field_help("swap_prob"))
        temperature = gr.Number(d["temperature"], label="Temperature T", info=_KD_FLAG_USERS)
        kd_weight = gr.Number(d["kd_weight"], label="KD weight λ", info=_KD_FLAG_USERS)
    with gr.Row(equal_height=True):
        gpus = gr.Slider(1, max(gpu_count, 2), value=1, step=1, label="GPUs (DistributedDataParallel)",
                         visible=gpu_count > 1)
        executor = gr.Radio(["local", "slurm"] if slurm else ["local"], value="local", label="Train on",
                            info="local: this machine; slurm: a SLURM job", visible=slurm, elem_id="train-executor")
        launch = gr.Button("Launch run", variant="primary")
    form_fields = FormFields(dataset, model, method, epochs, batch_size, lr, patch_size, swap_ratio, swap_prob,
                             temperature, kd_weight, seed, equal_compute, device, gpus, precision, teacher, executor)
    command = gr.Code(command_line(*(f.value for f in form_fields)), language="shell", interactive=False,
                      label="The same run from a terminal", elem_id="train-command")
    return Form(form_fields, launch, schedule, command)


def wire_form(ctx: AppContext, form: Form, tab: gr.Tab) -> None:
    """Schedule and epochs follow each other; the schedules' times follow the dataset, model and method (timed
    when the tab opens); the command line follows every field."""
    f = form.fields
    dataset, model, method, epochs, equal_compute = f.dataset, f.model, f.method, f.epochs, f.equal_compute
    gr.on([tab.select, method.input], handler(show_method, ctx), [method], flatten(MethodChoice(method, f.teacher)),
          api_name="train_method", show_progress="hidden")
    instant = dict(queue=False, show_progress="hidden")
    form.schedule.input(apply_schedule, [form.schedule, dataset], epochs, api_name="train_schedule", **instant)
    epochs.input(schedule_of, [epochs, dataset], form.schedule, api_name="train_epochs", **instant)
    gr.on([tab.select, dataset.input, model.input, method.input, equal_compute.input], handler(show_schedules, ctx),
          [dataset, model, method, equal_compute, epochs], form.schedule, api_name="train_schedules",
          show_progress="hidden", trigger_mode="always_last")
    gr.on([field.change for field in f], command_line, flatten(f), form.command, api_name="train_command", **instant)
