"""A real browser (headless Chromium via Playwright) visits every tab, does one thing in each, and screenshots it;
and drives it as a new user would: the dataset switched and back, values typed and changed with the keyboard, tabs
opened cold, a bad upload, the Guide's sentences read against the Compare tab's numbers.

The screenshots go to a temporary folder, so a test run leaves the working tree clean; the README's pictures are
made by the same test on request: ``IPS_SCREENSHOTS=docs/screenshots python -m pytest tests/test_ui_browser.py``.
Skips only when no Chromium binary exists.
"""

import os
import re
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, running_app, save_digits_run

WAIT_MS = 90_000  # model work on a busy 2-core CPU

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    runs = tmp_path_factory.mktemp("runs")
    save_digits_run(runs)
    with running_app(runs) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.shots = Path(os.environ.get("IPS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
        page.shots.mkdir(parents=True, exist_ok=True)
        page.set_default_timeout(WAIT_MS)
        page.goto(url)
        yield page
        browser.close()


def _no_error_toast(page) -> None:
    errors = page.locator('[data-testid="toast-body"].error')
    assert errors.count() == 0, errors.all_inner_texts()


def _no_error_badge(page) -> None:
    """No component shows the red "Error" badge that an event that raised leaves on its outputs."""
    badges = page.evaluate("""() => [...document.querySelectorAll('span.error')]
        .filter(e => !e.closest('[data-testid="toast-body"]') && e.textContent.trim() === 'Error').length""")
    assert badges == 0


def _changed(page, selector: str, before: str | None, attribute: str = "src") -> str:
    """Wait until the element's attribute differs from ``before``; return the new value."""
    page.wait_for_function("([sel, attr, old]) => { const e = document.querySelector(sel); "
                           "return e && e.getAttribute(attr) && e.getAttribute(attr) !== old; }",
                           arg=[selector, attribute, before])
    return page.locator(selector).get_attribute(attribute)


def _pick(page, picker: str, option: str) -> None:
    page.locator(f"{picker} input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).click()


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_function(f"""() => [...document.querySelectorAll('[role=tab]')]
        .some(t => t.getAttribute('aria-selected') === 'true' && t.textContent.trim() === {name!r})""")


def _shot(page, name: str) -> None:
    page.wait_for_timeout(400)  # plotly's transitions
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


def _images_shown(page, selector: str, count: int) -> None:
    page.wait_for_function(f"""() => [...document.querySelectorAll({selector!r})]
        .filter(img => img.complete && img.naturalWidth >= 200).length >= {count}""")


def test_1_patch_swap_shows_four_scored_images_and_a_random_pair(page):
    summary = page.locator("#swap-summary")
    summary.get_by_text("patch positions exchanged").wait_for()
    _images_shown(page, "[id^=swap-image-] img", 4)
    assert "A · ce" in summary.inner_text() and "B · ips" in summary.inner_text()
    _shot(page, "patch-swap")  # the default pair, so the picture only changes when the app does
    before = summary.inner_text()
    page.get_by_role("button", name="Random pair").click()
    page.wait_for_function("([sel, old]) => document.querySelector(sel).innerText !== old",
                           arg=["#swap-summary", before])
    assert "teaches" in summary.inner_text()
    assert page.get_by_text("← teacher").count() >= 1
    _no_error_toast(page)


def test_1b_typed_values_and_arrow_keys_redraw_the_pair(page):
    summary = page.locator("#swap-summary")
    before = page.locator("#swap-image-2 img").get_attribute("src")
    box = page.locator("#swap-ratio input[type=number]")
    box.fill("0.25")
    box.press("Enter")  # a typed value: no release, no blur
    summary.get_by_text("4 of 16").wait_for()  # round(0.25 x 16) positions exchanged
    after_typing = _changed(page, "#swap-image-2 img", before)
    page.locator("#swap-ratio input[type=range]").focus()
    page.keyboard.press("ArrowLeft")  # 0.25 -> 0.2
    summary.get_by_text("3 of 16").wait_for()
    _changed(page, "#swap-image-2 img", after_typing)
    seed = page.locator("#swap-seed input")
    before_seed = page.locator("#swap-image-2 img").get_attribute("src")  # read before typing: no race
    seed.fill("5")
    seed.press("Enter")
    before_seed = _changed(page, "#swap-image-2 img", before_seed)
    seed.fill("2.5")  # drawn with a whole seed, and the box says which
    seed.press("Enter")
    _changed(page, "#swap-image-2 img", before_seed)
    page.wait_for_function("() => document.querySelector('#swap-seed input').value === '3'")
    index_b = page.locator("#swap-index-b input[type=number]")
    index_b.fill("150")  # beyond the class's 100 test images: the last one is shown, not an error
    summary.get_by_text("sample 99 of the class").wait_for()
    index_b.press("Tab")
    page.wait_for_function("() => document.querySelector('#swap-index-b input[type=number]').value === '99'")
    index_a = page.locator("#swap-index-a input[type=number]")
    index_a.fill("-3")  # below the first sample: #0 is drawn, and the box says so without leaving it
    index_a.press("Enter")
    page.wait_for_function("() => document.querySelector('#swap-index-a input[type=number]').value === '0'")
    class_box = page.locator("#swap-class input")
    shown_class = class_box.input_value()
    class_box.click()
    page.keyboard.type("twelve")  # a short list takes no typing: the box keeps showing the class drawn
    page.keyboard.press("Escape")
    assert class_box.input_value() == shown_class
    _no_error_toast(page)
    _no_error_badge(page)


def test_1c_the_dataset_switch_brings_its_models_and_patch_sizes_and_back(page):
    summary = page.locator("#swap-summary")
    _pick(page, "#header-dataset", "digits")
    summary.get_by_text("2x2-pixel patches").wait_for()
    page.locator("#header-notice").get_by_text("no IPS checkpoint trained on").wait_for()
    assert page.locator("#swap-patch-size input").input_value() == "2 (default)"
    page.locator("#swap-patch-size input").click()
    options = [text.replace("✓", "").strip() for text in page.get_by_role("option").all_inner_texts()]
    assert options == ["1", "2 (default)", "4", "8"]  # what training accepts for 8x8 images
    page.keyboard.press("Escape")
    assert "digits-run" in page.locator("#header-model-a input").input_value()
    assert page.locator("#header-train").is_visible()
    _open_tab(page, "Grad-CAM")  # the other tabs followed: digits' test images, no error anywhere
    page.locator("#cam-info").get_by_text("true class:").wait_for()
    _open_tab(page, "Patch swap")
    page.wait_for_timeout(1500)  # anything still in flight
    _no_error_toast(page)
    _no_error_badge(page)
    _pick(page, "#header-dataset", "mnist5k")
    summary.get_by_text("7x7-pixel patches").wait_for()
    assert "B · ips" in summary.inner_text() and "A · ce" in summary.inner_text()
    assert page.locator("#swap-patch-size input").input_value() == "7 (default)"
    assert not page.locator("#header-train").is_visible()
    page.wait_for_timeout(1500)
    _no_error_toast(page)
    _no_error_badge(page)


def test_1d_a_bad_upload_is_one_warning_and_the_view_stays(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    before = page.locator("#swap-image-2 img").get_attribute("src")
    page.get_by_text("Use your own images (optional)").click()
    page.locator("#swap-upload-a input[type=file]").set_input_files(str(bad))
    warning = page.locator('[data-testid="toast-body"]', has_text="image a is not used")
    warning.first.wait_for()
    page.wait_for_timeout(1000)
    assert warning.count() == 1  # one toast, not two
    _images_shown(page, "[id^=swap-image-] img", 4)
    assert page.locator("#swap-image-2 img").get_attribute("src") is not None and before is not None
    _no_error_toast(page)
    _no_error_badge(page)
    page.get_by_text("Use your own images (optional)").click()


def _refused_and_kept(page, box: str, value: str, why: str, kept: list[str]) -> None:
    """Type a refused value into ``box`` and press Enter: a warning says why, no panel shows an Error badge, the
    ``kept`` elements show what they showed before (a refusal must not wipe the last good view) and the box goes
    back to the value it had (left there, the refused value was sent again by every later event of the tab)."""
    before = [page.locator(selector).first.inner_html() for selector in kept]
    page.evaluate("() => document.querySelectorAll('[data-testid=\"toast-close\"]').forEach(b => b.click())")
    page.wait_for_function("() => !document.querySelector('[data-testid=\"toast-body\"]')")  # a new one says why
    field = page.locator(box).first
    good = field.input_value()
    field.fill(value)
    field.press("Enter")
    page.locator('[data-testid="toast-body"]', has_text=why).first.wait_for()
    page.wait_for_function("([box, good]) => document.querySelector(box).value === good", arg=[box, good])
    page.wait_for_timeout(500)
    _no_error_badge(page)
    _no_error_toast(page)
    assert [page.locator(selector).first.inner_html() for selector in kept] == before


def _typed_and_shown(page, box: str, value: str, shown: str, picture: str) -> None:
    """Type ``value`` into a slider's ``box`` and press Enter: it is drawn as ``shown`` (its range and step), the
    box says ``shown`` and no warning or badge appears (a typed 2.5 samples was refused before)."""
    before = page.locator(picture).get_attribute("src")
    field = page.locator(box).first
    field.fill(value)
    field.press("Enter")
    _changed(page, picture, before)
    page.wait_for_function("([box, shown]) => document.querySelector(box).value === shown", arg=[box, shown])
    _no_error_badge(page)
    _no_error_toast(page)


def test_1e_refused_typed_values_on_a_dataset_without_models_leave_every_panel_as_it_was(page):
    """Every typed control whose value redraws, on a dataset without an IPS model and with every section open: a
    slider takes any number (put on its range and step, and shown so); a value the app refuses (a seed out of
    range, a layer the models lack) gives a warning, no badge, the view kept and the box back to its last good
    value (left there, it was sent again with every later event of the tab and refused again)."""
    summary = page.locator("#swap-summary")
    _pick(page, "#header-dataset", "digits")  # digits: no IPS model, patch evidence has only model A or none
    summary.get_by_text("2x2-pixel patches").wait_for()
    for accordion in page.get_by_text("The numbers (JSON, as the API returns them)").all():
        if accordion.is_visible():
            accordion.click()  # every section open
    page.wait_for_timeout(1500)
    _no_error_badge(page)
    _typed_and_shown(page, "#swap-index-a input[type=number]", "2.5", "3", "#swap-image-0 img")
    kept = ["#swap-summary", "#swap-image-0", "#swap-image-2", "#evidence-summary"]
    _refused_and_kept(page, "#swap-seed input", "-5", "seed must be a whole number from 0", kept)
    _refused_and_kept(page, "#swap-seed input", "", "seed is empty; type a whole number", kept)
    _typed_and_shown(page, "#swap-index-b input[type=number]", "4.6", "5", "#swap-image-1 img")  # not refused again
    _typed_and_shown(page, "#swap-ratio input[type=number]", "0.33", "0.35", "#swap-image-2 img")
    _open_tab(page, "Confidence gaps")
    page.locator("#gaps-summary").get_by_text("mean gap").first.wait_for()
    _refused_and_kept(page, "#gaps-seed input", "-5", "seed must be a whole number from 0", ["#gaps-summary"])
    for box, typed, shown in (("#gaps-n-pairs", "15", "20"), ("#gaps-ratio", "1.7", "1")):
        field = page.locator(f"{box} input[type=number]")
        field.fill(typed)
        field.press("Enter")
        page.wait_for_function("([box, shown]) => document.querySelector(box).value === shown",
                               arg=[f"{box} input[type=number]", shown])
    page.locator("#gaps-summary").get_by_text("20 pairs").first.wait_for()
    page.locator("#gaps-summary").get_by_text("ratio 1,").first.wait_for()
    _no_error_badge(page)
    _no_error_toast(page)
    for box, value in (("#gaps-n-pairs", "500"), ("#gaps-ratio", "0.5")):  # as the tests after this one expect
        page.locator(f"{box} input[type=number]").fill(value)
        page.locator(f"{box} input[type=number]").press("Enter")
    page.locator("#gaps-summary").get_by_text("ratio 0.5,").first.wait_for()
    _open_tab(page, "Grad-CAM")
    page.locator("#cam-info").get_by_text("true class:").wait_for()
    cam_kept = ["#cam-info", "#cam-image-input"]
    _refused_and_kept(page, "#cam-layer input", "nonexistent.layer", "not a CAM layer", cam_kept)
    _typed_and_shown(page, "#cam-test-index input[type=number]", "2.5", "3", "#cam-image-input img")
    opacity = page.locator("#cam-opacity input[type=number]")
    opacity.fill("-1")
    opacity.press("Enter")
    page.wait_for_function("() => document.querySelector('#cam-opacity input[type=number]').value === '0'")
    _no_error_badge(page)
    _no_error_toast(page)
    for box, value in (("#cam-opacity", "0.5"), ("#cam-test-index", "0")):  # as the tests after this one expect
        page.locator(f"{box} input[type=number]").fill(value)
        page.locator(f"{box} input[type=number]").press("Enter")
        page.wait_for_function("([box, value]) => document.querySelector(box).value === value",
                               arg=[f"{box} input[type=number]", value])
    _open_tab(page, "Patch swap")
    _pick(page, "#header-dataset", "mnist5k")
    summary.get_by_text("7x7-pixel patches").wait_for()
    page.get_by_label("the k most evident (towards a′)").check()  # k is live: it picks the positions
    page.locator("#evidence-summary").get_by_text("most evident positions").wait_for()
    k_box = page.locator("#evidence-k input[type=number]")
    k_box.fill("2.5")
    k_box.press("Enter")
    page.locator("#evidence-summary").get_by_text("each model's 3 most evident positions").wait_for()
    page.wait_for_function("() => document.querySelector('#evidence-k input[type=number]').value === '3'")
    _no_error_badge(page)
    _no_error_toast(page)
    page.get_by_label("the swap's random positions").check()
    page.locator("#evidence-summary").get_by_text("exchanged: the swap's").wait_for()


def test_2_confidence_gaps_draws_plots_and_a_row_opens_the_pair(page):
    _open_tab(page, "Confidence gaps")  # it computes when it opens (1e left digits' pairs there)
    page.locator("#gaps-summary").get_by_text("7-pixel patches").first.wait_for()  # mnist5k's
    page.locator("#gaps-summary").get_by_text("mean gap").first.wait_for()
    assert "tie" in page.locator("#gaps-summary").inner_text()
    page.wait_for_function("() => document.querySelectorAll('#gaps-table [data-testid=cell-0-1]').length >= 1")
    page.get_by_role("button", name="Compute gaps").click()
    page.locator("#gaps-summary").get_by_text("mean gap").first.wait_for()
    page.wait_for_function("() => !document.querySelector('#gaps-summary').innerText.includes('processing')")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3")
    assert re.search(r"\*?500 pairs", page.locator("#gaps-summary").inner_text())
    _no_error_toast(page)
    _shot(page, "confidence-gaps")
    row_class = page.locator("#gaps-table [data-testid=cell-0-0]").inner_text().strip()
    page.locator("#gaps-table [data-testid=cell-0-1]").click()
    page.wait_for_function("""() => [...document.querySelectorAll('[role=tab]')]
        .some(t => t.getAttribute('aria-selected') === 'true' && t.textContent.trim() === 'Patch swap')""")
    page.locator("#swap-summary").get_by_text(f"Class {row_class}").wait_for()
    _no_error_toast(page)


def test_3_gradcam_on_the_swapped_view_from_tab_1(page):
    _open_tab(page, "Grad-CAM")
    page.get_by_label("swapped view a′ (Patch swap tab)").check()
    page.locator("#cam-info").get_by_text("true class:").wait_for()
    _images_shown(page, "[id^=cam-image-] img", 3)
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=label-output-value], .output-class')]
        .length >= 2""")
    page.wait_for_function("() => document.querySelector('#cam-test-index input[type=range]').disabled")
    assert "give the same map on this layer" in page.locator("#cam-info").inner_text()  # GradCAM on block3
    _no_error_toast(page)
    _shot(page, "grad-cam")
    page.get_by_label("test image", exact=True).check()
    page.wait_for_function("() => !document.querySelector('#cam-test-index input[type=range]').disabled")
    before = page.locator("#cam-image-input img").get_attribute("src")
    box = page.locator("#cam-test-index input[type=number]")
    box.fill("12")
    box.press("Enter")
    _changed(page, "#cam-image-input img", before)
    overlay = page.locator("#cam-image-a img").get_attribute("src")
    page.locator("#cam-opacity input[type=range]").focus()
    page.keyboard.press("ArrowRight")
    _changed(page, "#cam-image-a img", overlay)
    _no_error_toast(page)
    _no_error_badge(page)


def _compare_numbers(page) -> dict[str, tuple[float, float]]:
    """The Compare tab's metrics table: {metric: (model A, model B)}."""
    cells = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '#compare-metrics [data-testid^="cell-"]')].map(c => [c.dataset.testid, c.innerText.trim()]))""")
    rows = range(len([key for key in cells if key.endswith("-0")]))
    return {cells[f"cell-{r}-0"]: (float(cells[f"cell-{r}-1"]), float(cells[f"cell-{r}-2"])) for r in rows}


def test_4_compare_fills_metrics_plots_galleries_and_opens_a_flip_in_gradcam(page):
    _open_tab(page, "Compare")  # cold: it compares when it opens
    page.locator("#compare-summary").get_by_text("Measured on one pair of models").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#compare-metrics [data-testid=cell-4-2]').length")
    page.shown_metrics = _compare_numbers(page)
    assert page.shown_metrics["accuracy (%)"][0] > 90
    page.get_by_role("button", name="Compare model A and model B").click()
    page.locator("#compare-summary").get_by_text("Measured on one pair of models").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 6")
    gallery = page.locator("#compare-fixed img, #compare-broken img")
    gallery.first.wait_for()
    assert page.get_by_text("accuracy (%)").count() >= 1
    _no_error_toast(page)
    _shot(page, "compare")
    gallery.first.click()
    page.wait_for_function("""() => [...document.querySelectorAll('[role=tab]')]
        .some(t => t.getAttribute('aria-selected') === 'true' && t.textContent.trim() === 'Grad-CAM')""")
    radio = page.get_by_role("radio", name="test image")
    page.wait_for_function("() => document.querySelector('input[type=radio][value=\"test image\"]').checked")
    assert radio.is_checked()
    index = page.get_by_role("spinbutton", name="number input for Test image index")
    page.wait_for_function("() => document.querySelector('[aria-label=\"number input for Test image index\"]').value"
                           " !== '0'")
    assert int(index.input_value()) > 0
    _no_error_toast(page)


def test_5_guide_renders_formulas_and_a_live_example(page):
    _open_tab(page, "Guide")
    page.wait_for_function("() => document.querySelectorAll('.katex').length >= 5")
    claims = page.locator("#guide-claims")
    claims.get_by_text("mean true-class probability").first.wait_for()  # its claim and the summary line
    text = claims.inner_text()
    numbers = page.shown_metrics  # what the Compare tab showed for the same two models
    for metric, label in (("mean true-class confidence", "mean true-class probability"), ("NLL", "NLL")):
        a, b = numbers[metric]
        stated = re.search(label + r".*?(\d+\.\d+) vs (\d+\.\d+)", text)
        assert stated, text
        assert float(stated.group(1)) == pytest.approx(b, abs=6e-4) and float(stated.group(2)) == pytest.approx(a,
                                                                                                            abs=6e-4)
    # a direction is stated only where its interval (or McNemar's test) shows a difference; else "no difference shown"
    a, b = numbers["mean true-class confidence"]
    assert ("is more confident in the true class" in text) == (b > a and "in the mean true-class probability" not in
                                                                text)
    a, b = numbers["NLL"]
    assert ("NLL is higher than" in text) == (b > a and "No NLL difference shown" not in text)
    a, b = numbers["accuracy (%)"]
    assert ("is more accurate than" in text) == (b > a and "No accuracy difference shown" not in text)
    assert "less over-confident" not in page.locator("body").inner_text()
    example = page.locator("#guide-example")
    example.get_by_text("teaches").first.wait_for()
    _images_shown(page, "#guide-images img", 4)
    _shot(page, "guide")  # the fixed first example
    before = example.inner_text()
    page.get_by_role("button", name="Another example").click()
    page.wait_for_function("([sel, old]) => document.querySelector(sel).innerText !== old",
                           arg=["#guide-example", before])
    _no_error_toast(page)


def test_6_train_runs_in_the_background_draws_curves_and_cancels(page):
    _open_tab(page, "Train")
    _pick(page, "#train-dataset", "digits")
    page.locator("#train-epochs input").fill("3")
    page.keyboard.press("Tab")
    page.wait_for_function("() => document.querySelector('#train-command').innerText"
                           ".includes('python -m explorer.train --dataset digits --epochs 3')")
    page.get_by_role("button", name="Launch run").click()
    details = page.locator("#train-details")
    details.get_by_text("finished").first.wait_for()
    run_id = page.locator("#train-current textarea, #train-current input").first.input_value()
    assert "ips on digits with small_cnn" in details.inner_text()
    assert page.get_by_role("button", name="Cancel run").is_disabled()  # a finished run cannot be cancelled
    assert page.get_by_role("button", name="Resume run").is_disabled()  # nor resumed
    page.locator("#train-curves .legendtext", has_text=run_id).wait_for()  # its curve
    assert page.locator("#train-curves .legendtext", has_text="mnist5k-small_cnn-ce").count() == 0  # other data
    _no_error_toast(page)

    _pick(page, "#header-dataset", "digits")  # the pickers offer the chosen dataset's checkpoints only
    page.wait_for_function("() => document.querySelector('#header-model-b input').value.includes('on digits')")
    page.get_by_label("Model A: baseline").click()  # the picker rescans: the new checkpoint is offered at once
    page.get_by_role("option", name=re.compile(re.escape(run_id))).wait_for()
    page.keyboard.press("Escape")
    _pick(page, "#header-dataset", "mnist5k")  # back to the demo pair for the tests after this one
    page.wait_for_function("() => document.querySelector('#header-model-b input').value"
                           ".includes('mnist5k-small_cnn-ips')")

    page.locator("#train-epochs input").fill("-1")  # refused: a warning, the selected run's details stay
    page.keyboard.press("Tab")
    shown = details.inner_html()
    page.get_by_role("button", name="Launch run").click()
    page.locator('[data-testid="toast-body"]', has_text="--epochs must be between 1 and").first.wait_for()
    page.wait_for_timeout(500)
    _no_error_badge(page)
    assert details.inner_html() == shown
    page.locator("#train-epochs input").fill("300")
    page.keyboard.press("Tab")
    page.get_by_role("button", name="Launch run").click()
    page.wait_for_function("([sel, old]) => document.querySelector(sel).innerText.includes('running ·') && "
                           "!document.querySelector(sel).innerText.includes(old)",
                           arg=["#train-details", run_id])
    page.get_by_role("button", name="Cancel run").click()
    details.get_by_text("cancelled").first.wait_for()
    page.locator("#train-runs [data-testid=cell-1-0]").click()  # back to the finished run for the picture
    details.get_by_text(run_id).wait_for()
    _no_error_toast(page)
    _shot(page, "train")


def _set_number(page, selector: str, value: int) -> None:
    """Type into a number box (a Slider's or a Number's) and leave it, as a person would."""
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Tab")


def test_7_patch_evidence_follows_the_pair_and_the_most_evident_exchange(page):
    _open_tab(page, "Patch swap")
    page.locator("#swap-summary").get_by_text("7x7-pixel patches").wait_for()  # mnist5k again after test 6
    summary = page.locator("#evidence-summary")
    summary.get_by_text("exchanged: the swap's").wait_for()
    page.locator("#evidence-maps .js-plotly-plot").wait_for()
    assert page.locator("#evidence-table [data-testid=cell-1-0]").inner_text().strip() == "B · ips"
    page.get_by_label("the k most evident (towards a′)").check()
    summary.get_by_text("most evident positions").wait_for()
    _no_error_toast(page)
    _shot(page, "patch-evidence")


def test_8_gaps_evidence_rate_has_its_count(page):
    _open_tab(page, "Confidence gaps")
    _set_number(page, '[aria-label="number input for Number of pairs N"]', 20)
    page.get_by_role("button", name="Does the summed patch evidence predict the teacher?").click()
    result = page.locator("#evidence-agreement")
    result.get_by_text("Over 20 pairs").wait_for()
    assert re.search(r"A · ce: .*\(\d+ of \d+ pairs", result.inner_text())
    _no_error_toast(page)


def test_9_gradcam_faithfulness_table_plot_and_sentence(page):
    _open_tab(page, "Grad-CAM")
    _set_number(page, '#faithfulness-n input[type=number]', 10)
    page.get_by_role("button", name="Measure the faithfulness of A's and B's maps").click()
    summary = page.locator("#faithfulness-summary")
    summary.get_by_text("ROAD combined").first.wait_for()  # not "10 test images": the progress bar says that too
    assert "10 test images" in summary.inner_text()
    assert "ROAD combined" in summary.inner_text() and "CAM share on the swapped-in patches" in summary.inner_text()
    page.locator("#faithfulness-plot .js-plotly-plot").wait_for()
    assert page.locator("#faithfulness-table").get_by_text("ROAD combined").count() >= 1
    _no_error_toast(page)
    _shot(page, "cam-faithfulness")
    kept = [page.locator(s).first.inner_html() for s in ("#faithfulness-summary", "#faithfulness-table")]
    page.locator("#faithfulness-seed input").fill("-5")  # a refused value in a box read by a button
    page.get_by_role("button", name="Measure the faithfulness of A's and B's maps").click()
    page.locator('[data-testid="toast-body"]', has_text="seed must be a whole number from 0").first.wait_for()
    page.wait_for_timeout(500)
    _no_error_badge(page)
    assert [page.locator(s).first.inner_html() for s in ("#faithfulness-summary", "#faithfulness-table")] == kept
    page.locator("#faithfulness-seed input").fill("0")


def test_10_study_launches_finishes_and_exports(page):
    _open_tab(page, "Study")
    page.locator("#study-id input, #study-id textarea").first.fill("browser")
    _set_number(page, "#study-seeds input[type=number]", 1)
    _set_number(page, "#study-epochs input", 0)  # refused: the estimate says why, no badge
    page.locator("#study-estimate").get_by_text("epochs must be a whole number of at least 1").wait_for()
    _no_error_badge(page)
    _set_number(page, "#study-epochs input", 1)
    page.locator("#study-estimate").get_by_text("2 runs").wait_for()
    page.get_by_role("button", name="Launch study").click()
    page.locator("#study-progress").get_by_text("2 of 2 runs finished").wait_for()
    assert "ips 1 ep" in page.locator("#study-summary").inner_text()  # the table's cells repeat it in hidden wrappers
    page.locator("#study-plot .js-plotly-plot").wait_for()
    assert "one seed gives no interval" in page.locator("#study-sentences").inner_text()
    _no_error_toast(page)
    _shot(page, "study")


def _inside_viewport(page, selector: str) -> bool:
    box, view = page.locator(selector).bounding_box(), page.viewport_size
    return (box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= view["width"]
            and box["y"] + box["height"] <= view["height"])


def test_11_presentation_mode_shows_the_four_pictures_on_a_projector_without_scrolling(page):
    projector = page.context.browser.new_page(viewport={"width": 1024, "height": 768})
    try:
        projector.set_default_timeout(WAIT_MS)
        projector.goto(page.url.split("?")[0] + "?present=1")
        projector.wait_for_function("() => document.body.classList.contains('present')")
        _images_shown(projector, "[id^=swap-image-] img", 4)
        pictures = [f"#swap-image-{i}" for i in range(4)]
        assert projector.evaluate("() => window.scrollY") == 0
        assert all(_inside_viewport(projector, picture) for picture in pictures)
        assert projector.locator("#present-toggle input").is_checked()
        projector.screenshot(path=str(page.shots / "presentation-mode.png"))  # what the projector shows
        projector.locator("#present-toggle input").uncheck()  # the toggle: back to the page with its controls first
        projector.wait_for_function("() => !document.body.classList.contains('present')")
        assert "present" not in projector.url and not _inside_viewport(projector, pictures[0])
        projector.locator("#present-toggle input").check()
        projector.wait_for_function("() => document.body.classList.contains('present')")
        assert projector.url.endswith("?present=1") and all(_inside_viewport(projector, p) for p in pictures)
        _no_error_toast(projector)
    finally:
        projector.close()


def test_12_transfer_shows_both_models_and_refuses_a_scene_that_does_not_exist(page):
    _open_tab(page, "Transfer")
    pictures = page.locator("#transfer-pictures img")
    page.wait_for_function("() => document.querySelectorAll('#transfer-pictures img').length === 4")
    shown = [pictures.nth(i).get_attribute("src") for i in range(4)]
    page.locator("#transfer-scene input").fill("-1")
    page.get_by_role("button", name="Show", exact=True).click()
    page.locator('[data-testid="toast-body"]', has_text="scene -1 does not exist").first.wait_for()
    page.wait_for_timeout(500)
    _no_error_badge(page)
    assert [pictures.nth(i).get_attribute("src") for i in range(4)] == shown
