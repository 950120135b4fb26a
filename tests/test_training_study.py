"""The study command: its table from finished run folders, and that it runs the training CLI."""

import json

from explorer.training.study import _run_id, main, summarise


def _fake_run(out, label, seed, accuracy, nll, ece, state="finished"):
    run = out / _run_id(label, seed)
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": state}))
    records = [{"kind": "epoch", "epoch": 1, "test_accuracy": 0.5, "test_nll": 1.0, "test_ece": 0.1},
               {"kind": "epoch", "epoch": 2, "test_accuracy": accuracy, "test_nll": nll, "test_ece": ece}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_table_has_every_finished_seed_and_mean_std_of_the_final_epoch(tmp_path):
    _fake_run(tmp_path, "ips 30 ep", 0, 0.989, 0.11, 0.0093)
    _fake_run(tmp_path, "ips 30 ep", 1, 0.985, 0.13, 0.0127)
    _fake_run(tmp_path, "ips 30 ep", 2, 0.5, 9.0, 0.5, state="running")  # unfinished: left out
    table = summarise(tmp_path, ["ips 30 ep"], [0, 1, 2]).splitlines()
    assert table[2] == "| ips 30 ep | 0 | 98.90 | 0.1100 | 0.93 |"
    assert table[3] == "| ips 30 ep | 1 | 98.50 | 0.1300 | 1.27 |"
    assert table[4] == "| **ips 30 ep** | mean ± std (2) | **98.70 ± 0.28** | 0.1200 ± 0.0141 | 1.10 ± 0.24 |"
    assert len(table) == 5


def test_a_study_trains_through_the_cli_and_resumes(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--seeds", "0", "--only", "ce 30 ep", "--", "--dataset", "digits",
            "--epochs", "1"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "== ce 30 ep, seed 0" in first and "| ce 30 ep | 0 |" in first
    config = json.loads((tmp_path / "ce-30-ep-s0" / "config.json").read_text())
    assert config["dataset"] == "digits" and config["epochs"] == 1 and config["method"] == "ce"
    assert main(args) == 0  # finished runs are not trained again
    assert "== ce 30 ep" not in capsys.readouterr().out
