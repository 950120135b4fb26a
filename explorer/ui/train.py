"""Tab 5, Train: start a training run in the background, watch it live, cancel, resume or delete it.

The tab drives the app's ``RunManager`` (explorer/training/runs.py): a run is the training CLI in a process of its
own, so the other tabs stay responsive and a crash in training cannot take the app down. The runs table,
the selected run, the buttons that apply to it and the curves are redrawn from the run folders by ``refresh``,
which a ``gr.Timer`` calls only while a run is queued or running; when nothing runs, nothing polls. A run folder
is a checkpoint folder, so a finished run is offered by the header's model pickers, which rescan the disk when
they open. The launch form (settings, schedules by purpose with this machine's time, precision, the CLI command)
is in ``train_form.py``. A cancelled, failed or interrupted run that saved a training state can be resumed
(``RunManager.resume``): it continues after its last finished epoch, in its own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from explorer.analysis.cache import file_version
from explorer.analysis.catalog import public_text
from explorer.analysis.figures import training_curves_figure
from explorer.analysis.payloads import runs_payload
from explorer.analysis.schedules import QUICK, fair_schedule
from explorer.training.command import FORM_DEFAULTS
from explorer.training.methods import METHODS
from explorer.training.runfolder import (
    CONFIG,
    FINAL_STATES,
    METRICS,
    RUN_TABLE_HEADERS,
    TRAIN_STATE,
    RunInfo,
    final_epoch,
    read_json,
    run_curves,
)
from explorer.training.runs import RunManager
from explorer.ui.binding import flatten, handler
from explorer.ui.context import AppContext
from explorer.ui.header import Header, dataset_checkpoints, missing_methods, notice_text, pick_models, train_label
from explorer.ui.train_form import build_form, launch_run, wire_form

__all__ = ["RUN_TABLE_WIDTHS", "TAB_ID", "TICK_S", "Confirmation", "DeleteQuestion", "Deleted", "LaunchedPair",
           "PairWatch", "RunButtons", "RunsView", "ask_delete", "build", "cancel_run", "delete_run", "describe",
           "follow_selected", "keep_run", "launch_other_method", "launch_pair", "list_runs", "reference_runs",
           "refresh", "resumable", "resume_run", "run_buttons", "select_run", "watch_pair"]

TAB_ID = "train"
PAIR_TICK_S = 5.0  # how often the header's pickers are rescanned while runs train
TICK_S = 2.0  # how often the table and the curves are redrawn while a run is queued or running
LOG_LINES = 30
# The runs table's column widths (pixels): each fits its header on one line ("meth od" wrapped) and its values at
# the table's font (about 8 px a character), e.g. the whole start time; a narrow page scrolls the table sideways
RUN_TABLE_WIDTHS = {"id": 230, "method": 90, "dataset": 90, "model": 100, "status": 90, "progress": 190,
                    "device": 110, "best test acc": 120, "started": 170}


class RunButtons(NamedTuple):
    """The buttons that apply to the selected run (``run_buttons``, or their components)."""

    cancel: Any
    delete: Any
    other: Any  # "Same settings, other method"
    resume: Any


class RunsView(NamedTuple):
    """One answer of ``refresh`` (or its components)."""

    table: Any
    plotted: Any  # the runs whose curves are drawn
    details: Any
    log: Any
    curves: Any
    buttons: RunButtons
    shown: Any  # what the page shows, so unchanged parts are skipped
    timer: Any


class PairWatch(NamedTuple):
    """One answer of ``watch_pair`` (or its components): the header's pickers, notice and button, the timer."""

    model_a: Any
    model_b: Any
    notice: Any
    train_pair: Any
    timer: Any


class LaunchedPair(NamedTuple):
    """One answer of ``launch_pair`` (or its components): the selected run, the tabs."""

    selected: Any
    tabs: Any


class DeleteQuestion(NamedTuple):
    """One answer of ``ask_delete`` (or its components): the run asked about, the question, its row."""

    pending: Any
    question: Any
    row: Any


class Confirmation(NamedTuple):
    """One answer of ``keep_run`` (or its components): the run the confirmation is about, the confirmation's row."""

    pending: Any
    row: Any


class Deleted(NamedTuple):
    """One answer of ``delete_run`` (or its components): the confirmation closed, the selection and curves."""

    confirmation: Confirmation
    selected: Any
    plotted: Any


def reference_runs(checkpoints_dir: Path) -> dict[str, Path]:
    """The demo checkpoints that are classification run folders (they have metrics.jsonl; a transfer run's
    config.json names its task), by folder name; links are not followed (see explorer.analysis.catalog)."""
    if not checkpoints_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(checkpoints_dir.iterdir())
            if not p.is_symlink() and (p / METRICS).is_file() and not read_json(p / CONFIG).get("task")}


def describe(info: RunInfo) -> str:
    """Markdown about one run: what it is, its state and progress, and what to do with it next; its message names
    the runs folder by its name, not by its path on the server."""
    head = f"**{info.run_id}**: {info.method} on {info.dataset} with {info.model}, device {info.device}"
    best = ("" if info.best_test_accuracy is None else
            f" Best test accuracy over its epochs {100 * info.best_test_accuracy:.1f} %.")
    if info.state == "running":
        speed = "" if info.images_per_s is None else f" · {info.images_per_s:.0f} images/s"
        eta = "" if info.eta_s is None else f" · about {info.eta_s:.0f} s left"
        state = (f"**running**: {info.message}." if info.progress == 0 else
                 f"**running** · epoch {info.epoch}/{info.epochs} · {100 * info.progress:.0f} %{speed}{eta}.{best}")
    elif info.state == "finished":
        final = (final_epoch(info.path) or {}).get("test_accuracy")
        kept = "" if final is None else f" (the final epoch's, test accuracy **{100 * final:.1f} %**)"
        state = (f"**finished**: {info.message}.{best} Its checkpoint{kept} is listed in the Model A and Model B "
                 f"pickers above (with dataset {info.dataset}).")
    elif info.state == "failed":
        state = f"**failed**: {info.message}. The last lines of its log are below."
    else:
        state = f"**{info.state}**: {info.message}.{best}"
    return public_text(f"{head}\n\n{state}", [info.path.parent])


# --------------------------------------------------------------------------------------------------
# Handlers: the RunManager and the reference runs are bound; the rest are the components' values
# --------------------------------------------------------------------------------------------------
def _curves(folders: dict[str, Path], references: list[str], files: list[list], previous: dict[str, Any],
            epochs: int | None) -> Any:
    """The curves figure of ``folders`` with x-axes up to ``epochs``, or ``gr.skip()`` when nothing changed."""
    if files == previous.get("curves"):
        return gr.skip()
    loaded = {name: run_curves(folder) for name, folder in folders.items()}
    return training_curves_figure({name: c for name, (_, c) in loaded.items()},
                                  {name: m for name, (m, _) in loaded.items()}, dashed=references, epochs=epochs)


def resumable(info: RunInfo | None) -> bool:
    """A cancelled or failed (also: interrupted) run that saved a training state can continue where it stopped."""
    return info is not None and info.state in ("cancelled", "failed") and (info.path / TRAIN_STATE).is_file()


def run_buttons(info: RunInfo | None) -> RunButtons:
    """Cancel, Delete, "Same settings, other method" and Resume, each clickable only when it applies to the
    selected run (so none answers with an error toast)."""
    return RunButtons(gr.Button(interactive=info is not None and info.state not in FINAL_STATES),
                      gr.Button(interactive=info is not None and info.state in FINAL_STATES),
                      gr.Button(interactive=info is not None), gr.Button(interactive=resumable(info)))


def refresh(runs: RunManager, references: dict[str, Path], selected: str | None, plotted_runs: list[str] | None,
            reference_names: list[str] | None, previous: dict[str, Any] | None, follow: bool = False) -> RunsView:
    """Redraw what changed: the table, the choice of runs, the selected run, its log, the curves, the buttons
    that apply to the selected run; keep the timer ticking only while a run is queued or running. ``follow`` adds
    the selected run to the curves. The curves' x-axes end at the longest plotted run's epochs.

    ``previous`` is what the page shows (table rows, run ids, curve files' versions): unchanged parts are
    skipped, so a tick while nothing happens sends nothing big. The log names the runs folder by its name, not by
    its path on the server (``catalog.public_text``).
    """
    active = runs.has_active_runs()  # asked first: when False, every run read below is in its final state
    infos = runs.runs()
    by_id = {info.run_id: info for info in infos}
    rows = runs_payload(infos)["data"]
    chosen = [r for r in plotted_runs or [] if r in by_id]
    if follow and selected in by_id and selected not in chosen:
        chosen.append(selected)
    datasets = {by_id[r].dataset for r in chosen}  # a reference is drawn beside runs of its own dataset only
    names = [name for name in reference_names or [] if name in references
             and (not datasets or read_json(references[name] / CONFIG).get("dataset") in datasets)]
    folders = {**{r: by_id[r].path for r in chosen}, **{name: references[name] for name in names}}
    files = [[name, *file_version(folder / METRICS)] for name, folder in folders.items()]
    previous = previous or {}
    now = {"rows": rows, "ids": list(by_id), "curves": files}
    if chosen == (plotted_runs or []) and now["ids"] == previous.get("ids"):
        runs_choice = gr.skip()
    else:
        runs_choice = gr.Dropdown(choices=list(by_id), value=chosen, multiselect=True)
    info = by_id.get(selected or "")
    failed = info is not None and info.state == "failed"
    log = runs.log_tail(info.run_id, LOG_LINES) if failed else ""
    return RunsView(pd.DataFrame(rows, columns=list(RUN_TABLE_HEADERS)) if rows != previous.get("rows") else gr.skip(),
                    runs_choice, describe(info) if info else "Select a run in the table.",
                    gr.Textbox(public_text(log, [runs.runs_dir]), visible=failed),
                    _curves(folders, names, files, previous, max((by_id[r].epochs for r in chosen), default=None)),
                    run_buttons(info), now, gr.Timer(active=active))


def follow_selected(runs: RunManager, references: dict[str, Path], selected: str | None,
                    plotted_runs: list[str] | None, reference_names: list[str] | None,
                    previous: dict[str, Any] | None) -> RunsView:
    """As watch_runs, and the selected run is added to the curves (after a launch or a click on a run)."""
    return refresh(runs, references, selected, plotted_runs, reference_names, previous, follow=True)


def list_runs(runs: RunManager) -> dict[str, list]:
    """The runs table as data: {"headers": RUN_TABLE_HEADERS, "data": one row per run, newest first}."""
    return runs_payload(runs.runs())


def _selected(run_id: str | None) -> str:
    if not run_id:
        raise ValueError("select a run in the table first")
    return run_id


def launch_other_method(runs: RunManager, run_id: str) -> str:
    """Launch the selected run's settings with the method to compare it with; returns the new run's id.

    A schedule shorter than the fair comparison's gets a warning: IPS usually loses to CE that early.
    """
    settings = runs.settings(_selected(run_id))
    if settings.get("method") not in METHODS:
        raise ValueError(f"run {run_id} does not record a known method (its settings name "
                         f"{settings.get('method', 'none')!r}), so there is no other method to launch with them")
    other = METHODS[settings["method"]].compare_with
    new_id = runs.launch({**settings, "method": other}, runs.info(run_id).processes)
    fair = fair_schedule(settings["dataset"])
    if int(settings["epochs"]) < fair.epochs:
        gr.Warning(f"{new_id}: {other} for {settings['epochs']} epochs, as {run_id}. A comparison this short says "
                   f"little: IPS needs a long enough schedule ({fair.purpose} on {settings['dataset']}: "
                   f"{fair.epochs} epochs).")
    else:
        gr.Info(f"{new_id}: {other} with the settings of {run_id}")
    return new_id


def launch_pair(ctx: AppContext, runs: RunManager, tab_id: str, dataset: str) -> LaunchedPair:
    """The header's button: train the baseline and IPS models the dataset lacks (the fair comparison's epochs, seed
    0), then show the Train tab following the last of them."""
    missing = missing_methods(dataset_checkpoints(ctx, dataset))
    if not missing:
        raise ValueError(f"{dataset} has a baseline and an IPS checkpoint already; pick them in the model pickers")
    epochs = fair_schedule(dataset).epochs
    launched = [runs.launch({**FORM_DEFAULTS, "dataset": dataset, "method": m, "epochs": epochs})
                for m in missing]
    gr.Info(f"training {' and '.join(missing)} on {dataset} ({', '.join(launched)}); finished runs appear in the "
            "model pickers")
    return LaunchedPair(launched[-1], gr.Tabs(selected=tab_id))


def watch_pair(ctx: AppContext, runs: RunManager, dataset: str, model_a: str | None,
               model_b: str | None) -> PairWatch:
    """While runs train (the header's button launched a pair): the model pickers rescanned, so a finished run
    appears in them by itself, and the button disabled, so a second click cannot start duplicates; the timer that
    calls this stops when no run is active."""
    training = runs.has_active_runs()
    checkpoints = dataset_checkpoints(ctx, dataset)
    a, b = pick_models(checkpoints, model_a, model_b)
    choices = [(text, path) for text, path, _ in checkpoints]
    missing = missing_methods(checkpoints)
    label = (f"Training {' and '.join(m.upper() for m in missing)} on {dataset}…" if training and missing else
             train_label(ctx, dataset, checkpoints))
    return PairWatch(gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=choices, value=b),
                     notice_text(dataset, checkpoints),
                     gr.Button(label or "", visible=bool(missing), interactive=not training), gr.Timer(active=training))


def select_run(evt: gr.SelectData) -> str:
    """A clicked row of the runs table -> its run id."""
    return evt.row_value[0]  # the id column


def resume_run(runs: RunManager, run_id: str) -> str:
    """Continue a cancelled, failed or interrupted run from its last finished epoch, in its own folder."""
    runs.resume(_selected(run_id))
    gr.Info(f"run {run_id} resumes after epoch {runs.info(run_id).epoch}")
    return describe(runs.info(run_id))


def cancel_run(runs: RunManager, run_id: str) -> str:
    """Cancel a queued or running run; returns its description (a running run stops within seconds)."""
    runs.cancel(_selected(run_id))
    return describe(runs.info(run_id))


def ask_delete(runs: RunManager, run_id: str) -> DeleteQuestion:
    """Ask before deleting: the run must exist and have ended."""
    info = runs.info(_selected(run_id))
    if info.state not in FINAL_STATES:
        raise ValueError(f"run {run_id} is {info.state}; cancel it first, then delete it")
    return DeleteQuestion(run_id, f"Delete run **{run_id}** ({info.method}, {info.state}) with its checkpoint and "
                                  "log? This cannot be undone.", gr.Row(visible=True))


def delete_run(runs: RunManager, run_id: str | None, selected: str, plotted_runs: list[str] | None) -> Deleted:
    """Delete the run the confirmation named; returns the selection and curves without it."""
    if not run_id:
        raise ValueError("nothing to delete: press Delete run… first")
    runs.delete(run_id)
    gr.Info(f"run {run_id} deleted")
    return Deleted(keep_run(), "" if selected == run_id else selected, [r for r in plotted_runs or [] if r != run_id])


def keep_run() -> Confirmation:
    """The confirmation answered "keep": forget the pending run, hide the question."""
    return Confirmation(None, gr.Row(visible=False))


# --------------------------------------------------------------------------------------------------
# Layout and wiring
# --------------------------------------------------------------------------------------------------
@dataclass
class _RunsPanel:
    """The runs table, the selected run's buttons and details, the delete confirmation, the curves."""

    table: gr.Dataframe
    current: gr.Textbox
    cancel: gr.Button
    delete: gr.Button
    other: gr.Button
    resume: gr.Button
    refresh_button: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm: gr.Button
    keep: gr.Button
    pending_delete: gr.State  # the run the confirmation is about, whatever is selected meanwhile
    details: gr.Markdown
    log: gr.Textbox
    plotted: gr.Dropdown
    shown_references: gr.CheckboxGroup
    curves: gr.Plot


def _runs_panel(references: dict[str, Path]) -> _RunsPanel:
    gr.Markdown("### Runs\nClick a run to select it: its details and curves appear below.")
    table = gr.Dataframe(headers=list(RUN_TABLE_HEADERS), interactive=False, wrap=True, max_height=320,
                         column_widths=[f"{RUN_TABLE_WIDTHS[h]}px" for h in RUN_TABLE_HEADERS], elem_id="train-runs")
    with gr.Row(equal_height=True):
        current = gr.Textbox(label="Selected run", interactive=False, placeholder="click a run in the table", scale=3,
                             elem_id="train-current")
        cancel = gr.Button("Cancel run", variant="stop", scale=1, interactive=False)  # run_buttons enables them
        delete = gr.Button("Delete run…", scale=1, interactive=False)
        other = gr.Button("Same settings, other method", scale=2, interactive=False)
        resume = gr.Button("Resume run", scale=1, interactive=False, elem_id="train-resume")
        refresh_button = gr.Button("Refresh", scale=1)
    with gr.Row(visible=False, equal_height=True) as confirm_row:
        confirm_text = gr.Markdown()
        confirm = gr.Button("Yes, delete it", variant="stop")
        keep = gr.Button("Keep it")
    pending_delete = gr.State()
    details = gr.Markdown("Select a run in the table.", elem_id="train-details")
    log = gr.Textbox(label=f"last {LOG_LINES} lines of its log", lines=10, max_lines=20, visible=False,
                     elem_id="train-log")
    with gr.Row(equal_height=True):
        plotted = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Curves of these runs",
                              scale=3, info="selected runs are added; remove one with its ×")
        shown_references = gr.CheckboxGroup(list(references), value=list(references), scale=2,
                                            label="Reference curves (demo checkpoints, dashed)")
    curves = gr.Plot(label="training curves", show_label=False, elem_id="train-curves")
    return _RunsPanel(table, current, cancel, delete, other, resume, refresh_button, confirm_row, confirm_text,
                      confirm, keep, pending_delete, details, log, plotted, shown_references, curves)


def build(ctx: AppContext, runs: RunManager, tab: gr.Tab, header: Header, tabs: gr.Tabs) -> None:
    """The tab; it also wires the header's button that trains a dataset's missing baseline and IPS models."""
    references = reference_runs(ctx.checkpoints_dir)
    gr.Markdown("Train a model in the background: it runs as a separate process (on the GPU when there is one), "
                f"so the other tabs stay usable; at most {runs.max_concurrent} run(s) train at once, further launches "
                "wait in the queue. A finished run appears in the model pickers above while they show its dataset."
                "\n\n**IPS needs a long enough schedule.** In the project's studies (every pair swapped) IPS was "
                "behind CE after 15 epochs on mnist5k and level or ahead from 30 on; so compare methods with the "
                f"*{fair_schedule('mnist5k').purpose}* schedule (its note says what was measured on the dataset); "
                f"the *{QUICK.purpose}* shows the curves move, not which method is better.")
    form = build_form(ctx, runs.slurm is not None)
    p = _runs_panel(references)
    timer = gr.Timer(TICK_S, active=False)
    shown = gr.State()  # what this page shows (table rows, run ids, curve files), so unchanged parts are skipped

    gr.api(handler(list_runs, runs), api_name="runs", concurrency_limit=None)
    watch = handler(refresh, runs, references)
    follow = handler(follow_selected, runs, references)
    watch_inputs = [p.current, p.plotted, p.shown_references, shown]
    watch_outputs = flatten(RunsView(p.table, p.plotted, p.details, p.log, p.curves,
                                     RunButtons(p.cancel, p.delete, p.other, p.resume), shown, timer))
    quiet = dict(show_progress="hidden", concurrency_limit=None)  # reads a few small files: no queueing behind others
    gr.on([tab.select, timer.tick, p.refresh_button.click, p.plotted.input, p.shown_references.input], watch,
          watch_inputs, watch_outputs, api_name="watch_runs", **quiet)
    form.launch.click(handler(launch_run, runs), flatten(form.fields), p.current, api_name="launch_run").success(
        follow, watch_inputs, watch_outputs, api_name="watch_launched_run", **quiet)
    pair_timer = gr.Timer(PAIR_TICK_S, active=False)
    pair_watch = dict(fn=handler(watch_pair, ctx, runs), inputs=header.pickers,
                      outputs=flatten(PairWatch(header.model_a, header.model_b, header.notice, header.train_pair,
                                                pair_timer)), **quiet)
    launched_pair = header.train_pair.click(handler(launch_pair, ctx, runs, TAB_ID), header.dataset,
                                            flatten(LaunchedPair(p.current, tabs)), api_name="launch_pair")
    launched_pair.success(follow, watch_inputs, watch_outputs, api_name="watch_launched_pair", **quiet)
    launched_pair.success(**pair_watch, api_name="watch_pair")
    pair_timer.tick(**pair_watch, api_visibility="private")
    p.other.click(handler(launch_other_method, runs), p.current, p.current, api_name="launch_other_method").success(
        follow, watch_inputs, watch_outputs, api_name="watch_other_method_run", **quiet)
    p.table.select(handler(select_run), None, p.current, api_name="select_run", show_progress="hidden").then(
        follow, watch_inputs, watch_outputs, api_name="watch_selected_run", **quiet)
    p.cancel.click(handler(cancel_run, runs), p.current, p.details, api_name="cancel_run").success(
        watch, watch_inputs, watch_outputs, api_name="watch_cancelled_run", **quiet)
    p.delete.click(handler(ask_delete, runs), p.current,
                   flatten(DeleteQuestion(p.pending_delete, p.confirm_text, p.confirm_row)), api_name="ask_delete_run")
    confirmation = Confirmation(p.pending_delete, p.confirm_row)
    p.confirm.click(handler(delete_run, runs), [p.pending_delete, p.current, p.plotted],
                    flatten(Deleted(confirmation, p.current, p.plotted)), api_name="delete_run").success(
        watch, watch_inputs, watch_outputs, api_name="watch_deleted_run", **quiet)
    p.keep.click(handler(keep_run), None, flatten(confirmation), api_name="keep_run")
    p.resume.click(handler(resume_run, runs), p.current, p.details, api_name="resume_run").success(
        watch, watch_inputs, watch_outputs, api_name="watch_resumed_run", **quiet)
    wire_form(ctx, form, tab)
