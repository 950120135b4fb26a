"""A real browser (headless Chromium via Playwright) visits every tab, does one thing in each, and screenshots it.

The screenshots go to a temporary folder, so a test run leaves the working tree clean; the README's pictures are
made by the same test on request: ``IPS_SCREENSHOTS=docs/screenshots python -m pytest tests/test_ui_browser.py``.
Skips only when no Chromium binary exists.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import running_app, save_digits_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
WAIT_MS = 90_000  # model work on a busy 2-core CPU

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    runs = tmp_path_factory.mktemp("runs")
    save_digits_run(runs)
    with running_app(runs) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
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


def test_2_confidence_gaps_draws_plots_and_a_row_opens_the_pair(page):
    _open_tab(page, "Confidence gaps")
    page.get_by_role("button", name="Compute gaps").click()
    page.locator("#gaps-summary").get_by_text("mean gap").first.wait_for()
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
    _no_error_toast(page)
    _shot(page, "grad-cam")


def test_4_compare_fills_metrics_plots_galleries_and_opens_a_flip_in_gradcam(page):
    _open_tab(page, "Compare")
    page.get_by_role("button", name="Compare model A and model B").click()
    page.locator("#compare-summary").get_by_text("test images").wait_for()
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
    page.locator("#train-dataset input").fill("digits")
    page.keyboard.press("Enter")
    page.locator("#train-epochs input").fill("3")
    page.keyboard.press("Tab")
    page.get_by_role("button", name="Launch run").click()
    details = page.locator("#train-details")
    details.get_by_text("finished").first.wait_for()
    run_id = page.locator("#train-current textarea, #train-current input").first.input_value()
    assert "ips on digits with small_cnn" in details.inner_text()
    page.locator("#train-curves .legendtext", has_text=run_id).wait_for()  # its curve, beside the dashed demos
    assert page.locator("#train-curves .legendtext", has_text="mnist5k-small_cnn-ce").count() == 1
    _no_error_toast(page)

    page.get_by_label("Model A: baseline").click()  # the picker rescans: the new checkpoint is offered at once
    page.get_by_role("option", name=re.compile(re.escape(run_id))).wait_for()
    page.keyboard.press("Escape")

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
    summary.get_by_text("CAM share on the swapped-in patches").wait_for()  # the progress bar shows there before
    assert "10 test images" in summary.inner_text() and "on ROAD combined" in summary.inner_text()
    page.locator("#faithfulness-plot .js-plotly-plot").wait_for()
    assert page.locator("#faithfulness-table").get_by_text("ROAD combined").count() >= 1
    _no_error_toast(page)
    _shot(page, "cam-faithfulness")


def test_10_study_launches_finishes_and_exports(page):
    _open_tab(page, "Study")
    page.locator("#study-id input, #study-id textarea").first.fill("browser")
    _set_number(page, "#study-seeds input[type=number]", 1)
    _set_number(page, "#study-epochs input", 1)
    page.locator("#study-estimate").get_by_text("2 runs").wait_for()
    page.get_by_role("button", name="Launch study").click()
    page.locator("#study-progress").get_by_text("2 of 2 runs finished").wait_for()
    assert page.locator("#study-summary").get_by_text("ips 1 ep").count() >= 1
    page.locator("#study-plot .js-plotly-plot").wait_for()
    assert "one seed gives no interval" in page.locator("#study-sentences").inner_text()
    page.get_by_role("button", name="Export Markdown and CSV").click()
    page.locator('a[download="browser.csv"]').wait_for()  # the file name is drawn as stem and extension
    _no_error_toast(page)
    _shot(page, "study")
