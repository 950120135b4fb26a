"""Tab 6, Study: a fair comparison over several seeds, trained in the background, with intervals, not anecdotes.

A study (``explorer.training.study``) is a ``StudySpec``: the methods against the baseline (CE) under the chosen
comparisons (equal epochs, equal compute, equal compute per step), each setting trained with the same seeds.
Launching saves the spec as ``RUNS/studies/<id>.json`` and queues every (setting, seed) in the app's
``RunManager`` under the run id ``<study id>-<setting>-s<seed>``, so the runs also appear in the Train tab and
studies started from the CLI (``python -m explorer.study --out RUNS``) appear in this tab's picker.

The results are read from the run folders (the final epoch's test metrics) by ``refresh``, which a
``gr.Timer`` calls only while one of the shown study's runs is queued or running. Choices made here:

- the study id is optional: empty means ``<dataset>-<methods>-<time>``; an id in use is refused;
- the seeds are 0 .. n-1, so two studies of n seeds use the same seeds;
- "Train unfinished runs" resumes a study (e.g. one stopped on the CLI): finished, queued and running runs are
  kept, a failed or cancelled run's folder is replaced by a new run of the same id;
- a launch that the run manager refuses part-way cancels the runs it had queued, so no half study trains.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from explorer.analysis.catalog import checkpoint_folder, public_text
from explorer.analysis.figures import paired_differences
from explorer.analysis.payloads import (
    STUDY_COMPARISON_HEADERS,
    STUDY_RUNS_HEADERS,
    STUDY_SUMMARY_HEADERS,
    study_comparison_table,
    study_payload,
    study_runs_table,
    study_summary_table,
)
from explorer.training.command import FORM_DEFAULTS, FORM_FIELDS
from explorer.training.config import RUN_ID_PATTERN
from explorer.training.methods import BASELINE, METHODS
from explorer.training.runfolder import STATUS
from explorer.training.runs import RunError, RunManager
from explorer.training.scheduler import remaining_runs, run_states, slurm_states
from explorer.training.study import (
    COMPARISONS,
    STUDIES,
    StudySpec,
    comparison_spec,
    estimate_seconds,
    list_studies,
    load_spec,
    save_spec,
)
from explorer.training.study_results import StudyResults, read_results
from explorer.ui.binding import flatten, handler
from explorer.ui.components import choice_dropdown
from explorer.ui.train_form import NO_TEACHER, TRAIN_DATASETS, teacher_choices

__all__ = ["TAB_ID", "TICK_S", "StudyButtons", "StudyExport", "StudyView", "build", "cancel_study", "estimate_study",
           "export_study", "launch_study", "queue_runs", "refresh", "refresh_studies", "resume_study", "run_states",
           "show_teacher", "study_results"]

TAB_ID = "study"
TICK_S = 2.0
ACTIVE = ("queued", "running")
# One folder of exports per app, removed when it exits: an export replaces the study's files there, so exporting
# again and again leaves nothing behind (Gradio serves a copy of each file from its own cache).
_EXPORTS = tempfile.TemporaryDirectory(prefix="ips-study-exports-")
PLOT_METRICS = {"accuracy": "test accuracy (points)", "nll": "test NLL", "ece": "test ECE (points)",
                "brier": "test Brier score"}


class StudyButtons(NamedTuple):
    """The buttons that apply to the chosen study (or their components), clickable only when they apply."""

    resume: Any  # "Train unfinished runs": some run is not finished, queued or running
    cancel: Any  # "Cancel study": some run is queued or running
    export: Any  # a study is chosen


class StudyView(NamedTuple):
    """One answer of ``refresh`` (or its components): the chosen study's results."""

    progress: Any
    runs: Any  # table: one row per run
    summary: Any  # table: mean ± std per setting
    comparisons: Any  # table: paired differences
    sentences: Any
    plot: Any
    buttons: StudyButtons
    shown: Any  # what the page shows, so a tick that changes nothing sends nothing
    timer: Any


class StudyExport(NamedTuple):
    """One answer of ``export_study`` (or its components): the Markdown and CSV files."""

    markdown: Any
    csv: Any


# --------------------------------------------------------------------------------------------------
# Gradio-free parts: the spec from the form, the runs of a spec in the run manager, their states
# --------------------------------------------------------------------------------------------------
def form_spec(study_id: str | None, dataset: str, model: str, methods: list[str] | None,
              comparisons: list[str] | None, seeds: float, epochs: float, batch_size: float, lr: float,
              teacher: str = "") -> StudySpec:
    """The study the form describes; ValueError with the reason when it cannot be one. ``teacher``: the folder of
    the finished run a kd arm distils from."""
    for value, what in ((seeds, "the number of seeds"), (epochs, "epochs"), (batch_size, "the batch size")):
        if value is None or float(value) != int(value) or int(value) < 1:
            raise ValueError(f"{what} must be a whole number of at least 1; got {value!r}")
    if lr is None or not float(lr) > 0:
        raise ValueError(f"the learning rate must be a positive number; got {lr!r}")
    if not comparisons:
        raise ValueError(f"choose at least one comparison: {', '.join(COMPARISONS.values())}")
    methods = [m for m in methods or [] if m != BASELINE]
    name = (study_id or "").strip() or f"{dataset}-{'-'.join(methods)}-{time.strftime('%Y%m%d-%H%M%S')}"
    return comparison_spec(name, dataset, model, [BASELINE, *methods], int(epochs), comparisons,
                           range(int(seeds)), {"batch_size": int(batch_size), "lr": float(lr)}, teacher)


def _teacher_folder(runs: RunManager, methods: list[str] | None, teacher: str | None) -> str:
    """The folder of the teacher picker's run (a public name, as the Train tab's picker gives it) when a chosen
    method distils from a teacher; else no teacher."""
    if not teacher or not any(METHODS[m].needs_teacher for m in methods or [] if m in METHODS):
        return ""
    return str(checkpoint_folder(teacher, [runs.runs_dir]))


def queue_runs(runs: RunManager, spec: StudySpec, executor: str = "local") -> list[str]:
    """Queue every run of ``spec`` that is not finished, queued or running (``remaining_runs``) with the
    ``executor`` (local or slurm); returns the ids queued.

    A failed or cancelled run is deleted and queued again under its id. When the run manager refuses a run,
    the runs queued so far are cancelled and the refusal is raised.
    """
    queued: list[str] = []
    try:
        for setting, seed in remaining_runs(spec, runs.runs_dir):
            run_id = spec.run_id(setting, seed)
            if (runs.runs_dir / run_id / STATUS).is_file():
                runs.delete(run_id)
            config = asdict(spec.config(setting, seed, runs.runs_dir))
            queued.append(runs.launch({k: v for k, v in config.items() if k in FORM_FIELDS}, run_id=run_id,
                                      study=spec.study_id, executor=executor))
    except RunError as exc:
        for run_id in queued:
            runs.cancel(run_id)
        undone = f"; the {len(queued)} run(s) queued before it were cancelled" if queued else ""
        raise RunError(f"study {spec.study_id}: {exc}{undone}") from None
    return queued


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _results(runs: RunManager, study_id: str | None) -> tuple[StudyResults, dict[str, str]]:
    if not study_id:
        raise ValueError("choose a study in the list (or launch one)")
    if not isinstance(study_id, str) or not RUN_ID_PATTERN.fullmatch(study_id) or ".." in study_id:
        raise ValueError(f"{study_id!r} is not a study id (letters, digits, '.', '_' and '-' only)")
    try:
        spec = load_spec(runs.runs_dir, study_id)
    except ValueError as exc:  # its message names the studies folder: by its name, not its path on the server
        raise ValueError(public_text(str(exc), [runs.runs_dir])) from None
    return read_results(spec, runs.runs_dir), run_states(spec, runs.runs_dir)


# --------------------------------------------------------------------------------------------------
# Handlers: the RunManager is bound; the rest are the components' values
# --------------------------------------------------------------------------------------------------
def estimate_study(runs: RunManager, study_id: str, dataset: str, model: str, methods: list[str],
                   comparisons: list[str], seeds: float, epochs: float, batch_size: float, lr: float,
                   executor: str = "local", teacher: str = "") -> str:
    """Markdown: the runs the form would train and how long they would take here (or why it cannot be launched)."""
    try:
        spec = form_spec(study_id, dataset, model, methods, comparisons, seeds, epochs, batch_size, lr,
                         _teacher_folder(runs, methods, teacher))
        seconds, how = estimate_seconds(spec, runs.runs_dir)
    except (ValueError, OSError) as exc:
        return f"⚠ {exc}"
    slots = runs.max_concurrent
    at_once = f" This app trains {slots} at once: about **{_duration(seconds / slots)}**." if slots > 1 else ""
    if executor == "slurm":
        at_once = " On SLURM they run as one job array, as many at once as the cluster grants."
    settings = ", ".join(s.label for s in spec.settings)
    compared = f"{len(spec.comparisons)} comparison" + ("s" if len(spec.comparisons) != 1 else "")
    return (f"**{len(spec.runs())} runs**: {len(spec.settings)} settings ({settings}) × {len(spec.seeds)} seeds; "
            f"{compared}. About **{_duration(seconds)}** one after another, {how}.{at_once}")


def launch_study(runs: RunManager, study_id: str, dataset: str, model: str, methods: list[str],
                 comparisons: list[str], seeds: float, epochs: float, batch_size: float, lr: float,
                 executor: str = "local", teacher: str = "") -> gr.Dropdown:
    """Save the study's spec and queue its runs with the executor (local, or slurm when the app has it); returns
    the study picker showing it (/launch_study). ``teacher``: a finished run's public name, for a kd arm."""
    spec = form_spec(study_id, dataset, model, methods, comparisons, seeds, epochs, batch_size, lr,
                     _teacher_folder(runs, methods, teacher))
    path = runs.runs_dir / STUDIES / f"{spec.study_id}.json"
    if path.exists():
        raise ValueError(f"a study {spec.study_id!r} exists already; choose another id, or pick it in the list "
                         f"and train its unfinished runs")
    save_spec(spec, runs.runs_dir)
    try:
        queued = queue_runs(runs, spec, executor)
    except RunError:
        if all(state == "not started" for state in run_states(spec, runs.runs_dir).values()):
            path.unlink()  # nothing was queued: the study never started
        raise
    gr.Info(f"study {spec.study_id}: {len(queued)} runs queued")
    return refresh_studies(runs, spec.study_id)


def resume_study(runs: RunManager, study_id: str | None) -> str:
    """Queue the unfinished runs of the chosen study (finished, queued and running runs are kept)."""
    results, _ = _results(runs, study_id)
    queued = queue_runs(runs, results.spec)
    gr.Info(f"study {study_id}: {len(queued)} run(s) queued" if queued else
            f"study {study_id}: every run is finished, queued or running; nothing to queue")
    return study_id


def cancel_study(runs: RunManager, study_id: str | None) -> str:
    """Cancel the chosen study's queued and running runs (those this app started); finished runs stay."""
    _, states = _results(runs, study_id)
    stopped, refused = [], []
    for run_id, state in states.items():
        if state in ACTIVE:
            try:
                runs.cancel(run_id)
                stopped.append(run_id)
            except RunError as exc:
                refused.append(str(exc))
    if refused:
        gr.Warning(" ".join(refused))
    gr.Info(f"study {study_id}: {len(stopped)} run(s) cancelled" if stopped else
            f"study {study_id}: no queued or running run to cancel")
    return study_id


def refresh_studies(runs: RunManager, current: str | None) -> gr.Dropdown:
    """The study picker's list, rescanned from RUNS/studies (studies of the CLI too), newest first; with no study
    chosen yet (a new page), the newest is chosen, so the tab opens on results rather than on an empty picker."""
    specs = list_studies(runs.runs_dir)
    choices = [(f"{s.study_id} · {s.dataset} · {len(s.runs())} runs", s.study_id) for s in specs]
    ids = [s.study_id for s in specs]
    return gr.Dropdown(choices=choices, value=current if current in ids else ids[0] if ids and not current else None)


def show_teacher(runs: RunManager, methods: list[str] | None) -> gr.Dropdown:
    """The teacher picker, listing the finished runs (as the Train tab's), shown when a chosen method distils from a
    teacher (kd)."""
    needs = any(METHODS[m].needs_teacher for m in methods or [] if m in METHODS)
    return gr.Dropdown(choices=[NO_TEACHER, *(teacher_choices(runs.runs_dir) if needs else [])], visible=needs)


def study_results(runs: RunManager, study_id: str) -> dict[str, Any]:
    """/study_results: ``StudyResults.to_json()`` of a study, with every run's state and how many finished."""
    results, states = _results(runs, study_id)
    return study_payload(results, states)


def refresh(runs: RunManager, study_id: str | None, metric: str, previous: dict[str, Any] | None) -> StudyView:
    """Redraw the chosen study: progress, runs, mean ± std, paired differences, sentences, dot plot; keep the
    timer ticking only while one of its runs is queued or running. Nothing is resent while nothing changed."""
    if not study_id:
        return StudyView("No study chosen: launch one above, or pick one in the list once there is one.",
                         *_empty_tables(), "", None, _buttons({}, chosen=False), None, gr.Timer(active=False))
    results, states = _results(runs, study_id)
    slurm_jobs = slurm_states(results.spec, runs.runs_dir)
    jobs = {run_id: f"job {job.job_id} {job.describe()}" for run_id, job in slurm_jobs.items()}
    active = any(state in ACTIVE for state in states.values()) or any(not job.ended for job in slurm_jobs.values())
    now = {"study": study_id, "metric": metric, "states": states, "jobs": jobs, "values": results.values}
    if now == previous:
        return StudyView(*(gr.skip(),) * 6, StudyButtons(*(gr.skip(),) * 3), gr.skip(), gr.Timer(active=active))
    total = len(states)
    counts = {state: sum(1 for s in states.values() if s == state) for state in sorted(set(states.values()))}
    details = ", ".join(f"{n} {state}" for state, n in counts.items() if state != "finished")
    progress = f"**{total - results.pending} of {total} runs finished**" + (f" ({details})" if details else "")
    spec = results.spec
    shared = ", ".join(f"{key} {value}" for key, value in spec.shared.items()) if spec.shared else "the defaults"
    progress += (f" · study **{spec.study_id}**: {spec.model} on {spec.dataset}, seeds "
                 f"{', '.join(map(str, spec.seeds))}; every setting with {shared}")
    differences = {f"{c.setting} − {c.baseline} ({c.name})": d for c in spec.comparisons
                   if (d := results.difference(metric, c)) is not None}
    sentences = results.sentences() or ["No comparison has a seed with both runs finished yet."]
    return StudyView(progress, pd.DataFrame(study_runs_table(results, states, jobs)),
                     pd.DataFrame(study_summary_table(results)), pd.DataFrame(study_comparison_table(results)),
                     "\n\n".join(f"- {s}" for s in sentences),
                     paired_differences(differences, PLOT_METRICS[metric]) if differences else None,
                     _buttons(states), now, gr.Timer(active=active))


def _empty_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The runs, summary and comparison tables with their headers and no rows (not Gradio's "1 2 3")."""
    return tuple(pd.DataFrame(columns=list(headers)) for headers in (STUDY_RUNS_HEADERS, STUDY_SUMMARY_HEADERS,
                                                                      STUDY_COMPARISON_HEADERS))


def _buttons(states: dict[str, str], chosen: bool = True) -> StudyButtons:
    """Train unfinished runs, Cancel study and Export, each clickable only when it applies to the study."""
    return StudyButtons(gr.Button(interactive=any(state not in ("finished", *ACTIVE) for state in states.values())),
                        gr.Button(interactive=any(state in ACTIVE for state in states.values())),
                        gr.Button(interactive=chosen))


def export_study(runs: RunManager, study_id: str | None) -> StudyExport:
    """The study's tables as a Markdown file and a CSV file (one row per finished run), in the app's export folder."""
    results, _ = _results(runs, study_id)
    spec = results.spec
    folder = Path(_EXPORTS.name)
    markdown = folder / f"{spec.study_id}.md"
    markdown.write_text(f"# Study {spec.study_id}\n\n{spec.model} on {spec.dataset}; seeds "
                        f"{', '.join(map(str, spec.seeds))}; {results.pending} run(s) not finished.\n\n"
                        f"{results.markdown()}\n\n" + "\n".join(f"- {s}" for s in results.sentences()) + "\n")
    csv = folder / f"{spec.study_id}.csv"
    csv.write_text(results.csv())
    return StudyExport(str(markdown), str(csv))


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
def _form(slurm: bool) -> tuple[list[gr.components.Component], gr.Button, gr.Markdown]:
    """The new-study form (in ``launch_study``'s parameter order), its button and the estimate; the executor
    choice is shown when the app was started with a SLURM executor (``slurm``), the teacher picker when a chosen
    method distils from a teacher (``show_teacher``)."""
    with gr.Row(equal_height=True):
        study_id = gr.Textbox(label="Study id", placeholder="empty: dataset-methods-time", scale=2,
                              elem_id="study-id")
        dataset = choice_dropdown(TRAIN_DATASETS, value="digits", label="Dataset", scale=1)
        model = gr.Dropdown(["small_cnn", "resnet18"], value="small_cnn", label="Model", allow_custom_value=True,
                            scale=1)
    with gr.Row(equal_height=True):
        methods = gr.CheckboxGroup([(m.label, m.name) for m in METHODS.values()], value=[BASELINE, "ips"],
                                   label="Methods",
                                   info=f"each compared with {METHODS[BASELINE].label} (always trained)")
        comparisons = gr.CheckboxGroup([(label, name) for name, label in COMPARISONS.items()],
                                       value=["equal-epochs"], label="Comparisons")
    with gr.Row(equal_height=True):
        seeds = gr.Slider(1, 10, value=3, step=1, label="Seeds", info="0 .. n-1; 5 or more for a useful interval",
                          elem_id="study-seeds")
        epochs = gr.Number(10, precision=0, label="Epochs", elem_id="study-epochs")
        batch_size = gr.Number(FORM_DEFAULTS["batch_size"], precision=0, label="Batch size")
        lr = gr.Number(FORM_DEFAULTS["lr"], label="Learning rate", info="peak; cosine decay to 0")
    with gr.Row(equal_height=True):
        executor = gr.Radio(["local", "slurm"] if slurm else ["local"], value="local", label="Train on",
                            info="local: this machine's training slots; slurm: SLURM jobs (a job array)",
                            visible=slurm, elem_id="study-executor")
        teacher = gr.Dropdown([NO_TEACHER], value="", label="Teacher (kd)", visible=False, elem_id="study-teacher",
                              info="a finished run whose model teaches the kd arm: same classes and image size")
    estimate = gr.Markdown(elem_id="study-estimate")
    launch = gr.Button("Launch study", variant="primary")
    return ([study_id, dataset, model, methods, comparisons, seeds, epochs, batch_size, lr, executor, teacher], launch,
            estimate)


def build(runs: RunManager, tab: gr.Tab) -> None:
    gr.Markdown("Compare methods fairly: every setting is trained with the same seeds, and each comparison reports "
                "the paired per-seed difference with its 95 % t-interval. The runs train in the background (they "
                "also appear in the Train tab); studies started with `python -m explorer.study` appear in the list.")
    fields, launch, estimate = _form(runs.slurm is not None)
    gr.Markdown("### Results")
    with gr.Row(equal_height=True):
        picker = gr.Dropdown([], label="Study", scale=3, elem_id="study-picker")
        resume = gr.Button("Train unfinished runs", scale=1, interactive=False)  # refresh enables what applies
        cancel = gr.Button("Cancel study", variant="stop", scale=1, interactive=False)
        refresh_button = gr.Button("Refresh", scale=1)
    progress = gr.Markdown(elem_id="study-progress")
    empty_runs, empty_summary, empty_comparisons = _empty_tables()
    runs_table = gr.Dataframe(empty_runs, label="runs (final epoch's test metrics)", interactive=False,
                              max_height=320, elem_id="study-runs")
    summary = gr.Dataframe(empty_summary, label="per setting: mean ± std over the finished seeds", interactive=False,
                           elem_id="study-summary")
    comparisons = gr.Dataframe(empty_comparisons, label="comparisons: paired per-seed difference setting − baseline",
                               interactive=False, wrap=True, elem_id="study-comparisons")
    sentences = gr.Markdown(elem_id="study-sentences")
    metric = gr.Radio([(title, name) for name, title in PLOT_METRICS.items()], value="accuracy",
                      label="Metric of the plot")
    plot = gr.Plot(label="paired differences", show_label=False, elem_id="study-plot")
    with gr.Row(equal_height=True):
        export = gr.Button("Export Markdown and CSV", scale=1, interactive=False)
        markdown_file, csv_file = gr.File(label="Markdown", scale=2), gr.File(label="CSV", scale=2)
    timer = gr.Timer(TICK_S, active=False)
    shown = gr.State()  # what the page shows, so a tick that changes nothing sends nothing

    gr.api(handler(study_results, runs), api_name="study_results", concurrency_limit=None)
    quiet = dict(show_progress="hidden", concurrency_limit=None)
    watch = handler(refresh, runs)
    watch_io = ([picker, metric, shown],
                flatten(StudyView(progress, runs_table, summary, comparisons, sentences, plot,
                                  StudyButtons(resume, cancel, export), shown, timer)))
    gr.on([tab.select, *(f.change for f in fields)], handler(estimate_study, runs), fields, estimate,
          api_name="estimate_study", trigger_mode="always_last", **quiet)
    methods, teacher = fields[3], fields[-1]
    gr.on([tab.select, methods.input], handler(show_teacher, runs), methods, teacher, api_name="study_teacher",
          **quiet)
    tab.select(handler(refresh_studies, runs), picker, picker, api_name="refresh_studies_on_select",
               **quiet).then(watch, *watch_io, api_name="watch_study_on_select", **quiet)
    picker.focus(handler(refresh_studies, runs), picker, picker, api_name="refresh_studies", **quiet)
    gr.on([picker.input, metric.input, refresh_button.click, timer.tick], watch, *watch_io, api_name="watch_study",
          **quiet)
    launch.click(handler(launch_study, runs), fields, picker, api_name="launch_study").success(
        watch, *watch_io, api_name="watch_launched_study", **quiet)
    resume.click(handler(resume_study, runs), picker, picker, api_name="resume_study").success(
        watch, *watch_io, api_name="watch_resumed_study", **quiet)
    cancel.click(handler(cancel_study, runs), picker, picker, api_name="cancel_study").success(
        watch, *watch_io, api_name="watch_cancelled_study", **quiet)
    export.click(handler(export_study, runs), picker, flatten(StudyExport(markdown_file, csv_file)),
                 api_name="export_study")
