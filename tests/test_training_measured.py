"""The measured numbers live once (explorer/measured.json): the study records them, everything else reads them."""

import json
import re
import shutil

from explorer.analysis.schedules import QUICK, evidence_markdown, fair_schedule
from explorer.training.measured import MEASURED_FILE, published, record_study, recorded
from explorer.training.study import comparison_spec, save_spec
from explorer.training.study_cli import main
from explorer.ui.guide import PEERS
from tests.helpers import ROOT, fake_study_run

RESULTS_DOC = ROOT / "docs" / "results.md"


def _signed(value: float) -> str:
    """A signed number as a pattern: the study's tables write "-", the prose tables "−"."""
    return ("[-−]" if value < 0 else r"\+") + re.escape(f"{abs(value):.2f}")


def test_the_results_document_quotes_every_recorded_comparison_as_recorded():
    text = RESULTS_DOC.read_text(encoding="utf-8")
    rows = recorded()
    assert len(rows) >= 9
    for row in rows:
        interval = rf"{_signed(row.difference)}(\*\*)? \({_signed(row.low)} to {_signed(row.high)}\)"
        if row.split == "test":  # the study's own table: the row names its setting and baseline
            arms = rf"\| {re.escape(row.setting)} \| {re.escape(row.baseline)} \|"
            assert re.search(rf"{arms}[^\n]*\*\*{interval}", text), row
        else:  # the sensitivity table: one line per knob
            assert re.search(interval, text), row
    for name, value in published()["self-kd-lib"]["top1"].items():
        assert re.search(rf"\| {re.escape(name)} \| {value:.2f} \|", text), name


def test_the_guide_and_the_train_tab_quote_the_recorded_numbers():
    for row in recorded():
        if row.method == "ips" and row.baseline == f"ce {row.epochs} ep":
            assert f"- {row.text()}" in evidence_markdown()
    fifteen = next(r for r in recorded() if (r.dataset, r.split, r.epochs) == ("mnist5k", "holdout", 15))
    assert QUICK.evidence.endswith(fifteen.text()) and "−1.37 points (95 % CI −1.69 to −1.06)" in QUICK.evidence
    assert "+0.65 points (95 % CI +0.38 to +0.92)" in fair_schedule("mnist5k").evidence
    assert "| 76.24 | 78.66 | 79.31 | 77.88 | 78.72 | 80.17 | 80.32 |" in PEERS


def test_a_study_records_its_comparisons_with_its_command_replacing_only_its_own_rows(tmp_path, capsys):
    measured = tmp_path / "measured.json"
    shutil.copy(MEASURED_FILE, measured)
    before = json.loads(measured.read_text())["comparisons"]
    spec = comparison_spec("toy", "digits", "small_cnn", ["ce", "ips"], 2, ["equal-epochs"], [0, 1, 2])
    save_spec(spec, tmp_path)
    for seed, (ce, ips, nll_ce, nll_ips) in enumerate([(0.90, 0.92, 0.30, 0.20), (0.91, 0.94, 0.32, 0.24),
                                                      (0.89, 0.90, 0.28, 0.22)]):
        fake_study_run(tmp_path, f"toy-ce-2-ep-s{seed}", ce, nll=nll_ce)
        fake_study_run(tmp_path, f"toy-ips-2-ep-s{seed}", ips, nll=nll_ips)
    argv = ["--id", "toy", "--out", str(tmp_path), "--table-only", "--record", str(measured)]
    assert main(argv) == 0 and "recorded 1 comparisons of study toy" in capsys.readouterr().out
    assert main(argv) == 0  # recording again replaces the study's rows, it does not add to them
    rows = json.loads(measured.read_text())["comparisons"]
    assert rows[:len(before)] == before and len(rows) == len(before) + 1
    toy = rows[-1]
    # differences 2, 3 and 1 points: mean 2, t(0.975, 2) = 4.303, sd 1, so 2 ± 4.303 / sqrt(3)
    assert (toy["difference"], toy["low"], toy["high"]) == (2.0, round(2 - 4.303 / 3**0.5, 2),
                                                            round(2 + 4.303 / 3**0.5, 2))
    assert (toy["nll_baseline"], toy["nll_setting"], toy["seeds"], toy["epochs"], toy["split"]) == (
        0.3, 0.22, 3, 2, "test")
    assert toy["command"] == f"python -m explorer.study --id toy --out {tmp_path} --table-only"
    record_study("toy", [], measured)
    assert json.loads(measured.read_text())["comparisons"] == before
