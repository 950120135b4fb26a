"""The app's context and event binding: its three caches, model work's lock and thread count, ``handler``."""

from __future__ import annotations  # annotations as strings, as in the tab modules

import inspect
import os
import shutil
import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import gradio as gr
import pytest
import torch
from gradio.helpers import special_args
from gradio.utils import get_function_params

from explorer.ui import binding
from explorer.ui.binding import TRIGGER, analysis_handler, flatten, handler, model_handler, restore_refused
from explorer.ui.context import ANALYSIS_WORK, HEAVY_WORK, MODEL_WORK, AppContext
from tests.helpers import CE_DEMO, DEMO, IPS_DEMO, save_digits_run

if TYPE_CHECKING:
    from explorer.training.runs import RunManager


@pytest.fixture()
def ctx(tmp_path) -> AppContext:
    return AppContext(tmp_path, DEMO, torch.device("cpu"))


def test_a_dataset_is_loaded_once_per_name(ctx):
    digits = ctx.dataset("digits")
    assert ctx.dataset("digits") is digits and len(ctx.datasets) == 1 and digits.name == "digits"
    with pytest.raises(ValueError, match="no dataset chosen"):
        ctx.dataset("")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        ctx.dataset("nope")
    assert len(ctx.datasets) == 1


def test_a_checkpoint_is_cached_until_its_weights_file_is_replaced(ctx):
    mnist = ctx.dataset("mnist5k")
    run = ctx.runs_dir / "run"
    shutil.copytree(CE_DEMO, run)
    first = ctx.checkpoint(str(run), mnist)
    assert ctx.checkpoint(str(run), mnist) is first and first.card["method"] == "ce"
    shutil.copy(IPS_DEMO / "model.safetensors", run / "model.safetensors")  # the run saved a newer epoch
    second = ctx.checkpoint(str(run), mnist)
    assert second is not first and second.card["method"] == "ips" and len(ctx.loaded) == 2


def test_models_are_named_by_slot_and_method_and_a_mismatch_names_its_slot(ctx):
    mnist = ctx.dataset("mnist5k")
    assert list(ctx.models(mnist, str(CE_DEMO), str(IPS_DEMO))) == ["A · ce", "B · ips"]
    assert list(ctx.models(mnist, None, str(IPS_DEMO))) == ["B · ips"]
    digits_run = save_digits_run(ctx.runs_dir)
    with pytest.raises(ValueError, match=r"Model B: .*does not match dataset mnist5k"):
        ctx.models(mnist, str(CE_DEMO), str(digits_run))
    with pytest.raises(ValueError, match="Model A: /etc is not one of the checkpoints offered here"):
        ctx.models(mnist, "/etc", None)


def test_split_logits_are_computed_once_per_weights_file_version(ctx):
    mnist = ctx.dataset("mnist5k")
    run = ctx.runs_dir / "copy"
    shutil.copytree(CE_DEMO, run)
    checkpoint = ctx.checkpoint(str(run), mnist)
    first = ctx.split_logits(checkpoint, mnist)
    assert first.shape == (1000, 10) and ctx.split_logits(checkpoint, mnist) is first
    assert torch.equal(first.argmax(1), checkpoint.model(mnist.normalize(mnist.test_images)).argmax(1))
    weights = run / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = ctx.split_logits(checkpoint, mnist)
    assert again is not first and torch.allclose(again, first) and len(ctx.logits) == 2


def test_small_model_work_runs_single_threaded_on_the_cpu_and_restores_the_count(ctx):
    before = torch.get_num_threads()
    with ctx.model_work(small=True):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with ctx.model_work(small=False):
        assert torch.get_num_threads() == before
    on_gpu = AppContext(ctx.runs_dir, DEMO, torch.device("cuda"))  # only the device type is read
    with on_gpu.model_work(small=True):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), ctx.model_work(small=True):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_model_work_runs_one_call_at_a_time(ctx):
    inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with ctx.model_work(small=True):
            order.append("first in")
            inside.set()
            release.wait(timeout=10)
            order.append(f"first out, threads {torch.get_num_threads()}")

    def second() -> None:
        with ctx.model_work(small=False):
            order.append(f"second in, threads {torch.get_num_threads()}")

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(timeout=10)
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(timeout=0.3)
    assert t2.is_alive() and order == ["first in"]  # the second call waits for the first
    release.set()
    t1.join(timeout=10)
    t2.join(timeout=10)
    assert order == ["first in", "first out, threads 1", f"second in, threads {torch.get_num_threads()}"]


def pick(ctx: AppContext, which: str, name: str, evt: gr.SelectData,
         progress=gr.Progress()) -> str:  # noqa: B008 (Gradio injects it)
    """A handler as the tabs write them: the context and a fixed value first, then the components' values."""
    if not name:
        raise ValueError("pick a name first")
    return f"{ctx.checkpoints_dir.name}/{which}/{name}/{evt.index}"


def test_handler_binds_the_first_parameters_and_shows_gradio_the_rest(ctx):
    bound = handler(pick, ctx, "fixed")
    assert list(inspect.signature(bound).parameters) == ["name", "evt", "progress", TRIGGER]
    assert typing.get_type_hints(bound)["evt"] is gr.SelectData  # resolvable: Gradio injects the event data
    assert [name for name, *_ in get_function_params(bound)] == ["name", "progress"]  # the API drops progress
    inputs, progress_index, _, _ = special_args(bound, ["Ada"], event_data=gr.EventData(None, {
        "index": 4, "value": "x"}))
    assert progress_index == 2 and isinstance(inputs[1], gr.SelectData) and isinstance(inputs[3], gr.EventData)
    assert bound(*inputs) == "checkpoints/fixed/Ada/4"
    with pytest.raises(gr.Error, match="pick a name first") as error:  # a program's call (no trigger): an error
        bound("", inputs[1])
    assert error.value.print_exception is False


def test_a_refusal_in_the_page_is_a_warning_and_leaves_every_output_as_it_was(ctx, monkeypatch):
    """A gr.Error would paint a red Error badge on every output of the event and lose the last good view."""
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    bound = handler(pick, ctx, "fixed")
    button = gr.Button()  # the component a person's event names as its trigger
    inputs, *_ = special_args(bound, [""], event_data=gr.EventData(button, {"index": 4, "value": "x"}))
    assert bound(*inputs) == gr.skip() and warnings == ["pick a name first"]
    inputs, *_ = special_args(bound, ["Ada"], event_data=gr.EventData(button, {"index": 4, "value": "x"}))
    assert bound(*inputs) == "checkpoints/fixed/Ada/4" and len(warnings) == 1


def draw(ctx: AppContext, seed: float, ratio: float) -> str:
    if seed != int(seed):
        raise ValueError("the seed must be a whole number")
    return f"drawn with seed {seed:g} at ratio {ratio:g}"


def test_a_refused_typed_value_is_replaced_by_the_last_one_accepted_from_that_session(ctx, monkeypatch):
    """Issue 24: a refused 2.5 stayed in its box, so every later event of the tab sent it again and was refused."""
    monkeypatch.setattr(gr, "Warning", lambda message: None)
    with gr.Blocks() as demo:
        seed, ratio, out = gr.Number(), gr.Slider(0, 1), gr.Textbox()
        bound = handler(draw, ctx)
        restore_refused(seed.input(bound, [seed, ratio], out), bound, {"seed": seed, "ratio": ratio})
    restore = next(block.fn for block in demo.fns.values() if block.fn.__name__ == "restore")
    session = ["ada"]
    monkeypatch.setattr(binding, "current_session", lambda: session[0])

    def typed(*values, trigger=seed):  # a person's event names its trigger; the page's load event does not
        inputs, *_ = special_args(bound, list(values), event_data=gr.EventData(trigger, {}))
        return bound(*inputs)

    def restored(name):
        return restore(gr.Request(session_hash=name))

    assert typed(3, 0.5, trigger=None) == "drawn with seed 3 at ratio 0.5"  # the first view, drawn at load
    assert restored("ada") == gr.skip()  # accepted: leave the boxes
    assert typed(2.5, 0.25) == gr.skip()
    assert restored("bob") == gr.skip()  # another person's boxes are theirs
    assert restored("ada") == [3, 0.5]  # the refused 2.5 and the ratio sent with it: the last accepted values
    assert restored("ada") == gr.skip()  # once
    typed(2.5, 0.25)
    assert typed(4, 0.25) == "drawn with seed 4 at ratio 0.25" and restored("ada") == gr.skip()  # corrected meanwhile
    inputs, *_ = special_args(bound, [2.5, 0.25], event_data=None)
    with pytest.raises(gr.Error):  # a program's call is refused as an error and remembers nothing
        bound(*inputs)
    assert restored("ada") == gr.skip()
    with gr.Blocks() as single:
        seed, ratio, out = gr.Number(), gr.Slider(0, 1), gr.Textbox()
        bound = handler(draw, ctx)
        restore_refused(seed.input(bound, [seed, ratio], out), bound, {"seed": seed})
    restore = next(block.fn for block in single.fns.values() if block.fn.__name__ == "restore")
    typed(3, 0.5, trigger=None)
    typed(2.5, 0.5)
    assert restored("ada") == 3  # one output takes its value alone: given [3], the box kept the refused value
    remembered = len(binding._ACCEPTED._arguments)
    unwired = handler(draw, ctx)
    inputs, *_ = special_args(unwired, [5, 0.5], event_data=gr.EventData(seed, {}))
    assert unwired(*inputs) == "drawn with seed 5 at ratio 0.5"
    assert len(binding._ACCEPTED._arguments) == remembered  # a handler without restore_refused keeps nothing


def select(runs: RunManager, evt: gr.SelectData) -> str:
    """A handler whose bound parameter is annotated with a name imported only for type checkers."""
    return f"{runs} {evt.value}"


def test_handler_hides_the_annotations_of_bound_parameters(ctx):
    bound = handler(select, "manager")
    assert typing.get_type_hints(bound) == {"evt": gr.SelectData, TRIGGER: gr.EventData, "return": str}
    inputs, _, event_index, _ = special_args(bound, [], event_data=gr.EventData(None, {"index": 0, "value": "r1"}))
    assert event_index == 1 and bound(*inputs) == "manager r1"  # 1: the trigger, after evt


def test_model_handler_runs_inside_model_work(ctx):
    def threads(context: AppContext, label: str) -> str:
        return f"{label} {torch.get_num_threads()}"

    assert model_handler(ctx, threads, small=True)("threads") == "threads 1"
    assert list(inspect.signature(model_handler(ctx, threads)).parameters) == ["label", TRIGGER]
    with pytest.raises(TypeError, match="takes 2 parameters; 3 were bound"):
        handler(threads, ctx, "a", "b")


# --------------------------------------------------------------------------------------------------
# Lanes: light work never waits behind an analysis; analyses are cached
# --------------------------------------------------------------------------------------------------
@contextmanager
def _lane_held_elsewhere(ctx, lane: str) -> Iterator[None]:
    """Another thread holds ``lane`` for the duration of the block."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ctx.lane_work(lane):
            inside.set()
            release.wait(timeout=10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert inside.wait(timeout=10)
        yield
    finally:
        release.set()
        worker.join(timeout=10)


def test_light_work_does_not_wait_for_an_analysis_in_its_own_lane(ctx):
    done = threading.Event()

    def light_work() -> None:
        with ctx.model_work(small=True):
            done.set()

    with _lane_held_elsewhere(ctx, ANALYSIS_WORK):
        threading.Thread(target=light_work).start()
        assert done.wait(timeout=2), "light work waited for the analysis lane"


def test_each_lane_has_its_own_model_instance(ctx):
    mnist = ctx.dataset("mnist5k")
    light = ctx.checkpoint(str(CE_DEMO), mnist)
    with ctx.lane_work(ANALYSIS_WORK):
        assert ctx.lane == ANALYSIS_WORK
        analysis = ctx.checkpoint(str(CE_DEMO), mnist)
        with ctx.lane_work(HEAVY_WORK):
            assert ctx.lane == HEAVY_WORK
        assert ctx.lane == ANALYSIS_WORK
    assert ctx.lane == MODEL_WORK and ctx.checkpoint(str(CE_DEMO), mnist) is light
    assert analysis.model is not light.model and analysis.path == light.path
    weights = dict(analysis.model.state_dict())
    assert all(torch.equal(tensor, weights[name]) for name, tensor in light.model.state_dict().items())


CALLS: list[tuple[str, int]] = []  # each computation of ``count_images``: the lane and threads it ran in


def count_images(ctx: AppContext, dataset_name: str, model_a: str | None, model_b: str | None, n: float,
                 progress=gr.Progress()) -> dict:  # noqa: B008 (Gradio injects it)
    """An analysis as the tabs write them."""
    if n < 1:
        raise ValueError("n must be at least 1")
    dataset = ctx.dataset(dataset_name)
    checkpoints = ctx.models(dataset, model_a, model_b)
    CALLS.append((ctx.lane, torch.get_num_threads()))
    return {"n": int(n), "models": sorted(str(c.path.name) for c in checkpoints.values())}


def test_an_analysis_is_computed_once_per_inputs_and_checkpoint_version(ctx):
    run = ctx.runs_dir / "run"
    shutil.copytree(CE_DEMO, run)
    bound, calls = analysis_handler(ctx, count_images), CALLS
    calls.clear()
    assert list(inspect.signature(bound).parameters) == ["dataset_name", "model_a", "model_b", "n", "progress", TRIGGER]
    first = bound("mnist5k", str(run), str(IPS_DEMO), 5)
    assert first == {"n": 5, "models": [IPS_DEMO.name, "run"]} and calls == [(ANALYSIS_WORK, 1)]
    assert bound("mnist5k", str(run), str(IPS_DEMO), 5) is first and len(calls) == 1
    bound("mnist5k", str(run), str(IPS_DEMO), 6)  # other inputs
    assert len(calls) == 2
    weights = run / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the run saved a newer epoch
    assert bound("mnist5k", str(run), str(IPS_DEMO), 5) == first and len(calls) == 3
    with pytest.raises(gr.Error, match="n must be at least 1"):
        bound("mnist5k", str(run), str(IPS_DEMO), 0)
    with pytest.raises(gr.Error, match="n must be at least 1"):  # a refusal is not cached
        bound("mnist5k", str(run), str(IPS_DEMO), 0)


def test_a_cached_analysis_waits_for_no_lane(ctx):
    bound, calls = analysis_handler(ctx, count_images), CALLS
    calls.clear()
    first = bound("mnist5k", str(CE_DEMO), None, 3)
    answers = []
    with _lane_held_elsewhere(ctx, ANALYSIS_WORK):
        reader = threading.Thread(target=lambda: answers.append(bound("mnist5k", str(CE_DEMO), None, 3)))
        reader.start()
        reader.join(timeout=2)
        assert answers == [first] and len(calls) == 1, "a cached answer waited for the busy lane"


def figure_gallery_and_state(ctx: AppContext, seed: float) -> tuple:
    """An analysis's kind of answer: a figure, a gallery of (picture, caption), a table's dict and a state array."""
    import numpy as np
    import plotly.graph_objects as go

    CALLS.append(seed)
    rng = np.random.default_rng(int(seed))
    pictures = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(2)]
    return (go.Figure(go.Bar(y=[seed, 1.0])), [(p, f"picture {i}") for i, p in enumerate(pictures)],
            {"headers": ["a"], "data": [[seed]]}, np.arange(3) * seed)


def test_a_cached_analysis_is_kept_in_the_form_gradio_sends(ctx):
    """A repeated Compare spent most of its server time encoding its figures and gallery pictures again."""
    import json

    import numpy as np
    from gradio.components.plot import PlotData
    from PIL import Image

    CALLS.clear()
    bound = analysis_handler(ctx, figure_gallery_and_state)
    figure, gallery, table, state = bound(seed=3)
    assert bound(seed=3)[0] is figure and CALLS == [3]  # computed once, the same encoded answer after
    assert isinstance(figure, PlotData) and figure.type == "plotly"
    assert json.loads(figure.plot)["data"][0]["y"] == [3, 1.0]
    expected = figure_gallery_and_state(ctx, 3)[1]
    assert [caption for _, caption in gallery] == ["picture 0", "picture 1"]
    for (path, _), (picture, _) in zip(gallery, expected, strict=True):
        assert path.startswith(ctx.pictures.name) and path.endswith(".png")
        assert np.array_equal(np.asarray(Image.open(path)), picture)  # lossless, the same pixels
    assert table == {"headers": ["a"], "data": [[3]]} and isinstance(state, np.ndarray)  # left as they are
    assert np.array_equal(state, [0, 3, 6])


class _Caption(NamedTuple):
    text: str
    note: str


class _View(NamedTuple):
    picture: str
    caption: _Caption
    data: dict


def test_a_named_answer_reaches_gradio_flat_in_field_order_like_its_components(ctx):
    def view(context: AppContext, name: str) -> _View:
        return _View(f"picture of {name}", _Caption("text", "note"), {"name": name})

    assert handler(view, ctx)("x") == ["picture of x", "text", "note", {"name": "x"}]
    components = _View("image", _Caption("markdown", "markdown 2"), "json")  # how a tab lists its outputs
    assert flatten(components) == ["image", "markdown", "markdown 2", "json"]
    assert flatten("one") == "one" and flatten(("a", "tuple")) == ("a", "tuple")  # not a record: as it is
