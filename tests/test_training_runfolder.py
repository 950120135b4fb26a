"""The run folder's files: metrics.jsonl append-only (cost per record, torn lines, resume), atomic JSON writes."""

import json
import os
import sys
from pathlib import Path

import pytest

from explorer import checkpoints
from explorer.training.runfolder import (
    METRICS,
    MetricsLog,
    epoch_records,
    read_metrics,
    read_run_info,
    run_curves,
    write_json,
)
from explorer.training.study import comparison_spec, list_studies, save_spec

RECORD = {"kind": "step", "epoch": 1, "step": 1, "loss": 1.234567, "ce": 1.0, "kd": 0.234567, "lr": 0.1,
          "images_per_s": 2000.0, "elapsed": 1.5}


def _io_counters() -> dict[str, int]:
    """This process's write bytes and write calls so far (Linux /proc/self/io)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"bytes": int(fields["wchar"]), "writes": int(fields["syscw"])}


def _cost_of_100_appends(log: MetricsLog) -> dict[str, int]:
    before = _io_counters()
    for _ in range(100):
        log.append(RECORD)
    after = _io_counters()
    log.close()
    return {k: after[k] - before[k] for k in before}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/io")
def test_an_append_costs_one_short_write_whatever_the_length_of_the_file(tmp_path):
    empty, long = tmp_path / "empty", tmp_path / "long"
    empty.mkdir()
    long.mkdir()
    line = json.dumps(RECORD) + "\n"
    epoch_line = json.dumps({"kind": "epoch", "epoch": 1, "step": 50_000}) + "\n"
    (long / METRICS).write_text(line * 50_000 + epoch_line)  # a long run's file, continued as a resumed run does
    on_empty = _cost_of_100_appends(MetricsLog(empty))
    on_long = _cost_of_100_appends(MetricsLog(long, resume_after_epoch=1))
    assert on_empty == on_long == {"bytes": 100 * len(line), "writes": 100}
    assert len(read_metrics(long)) == 50_101 and read_metrics(empty) == [RECORD] * 100


def test_readers_skip_a_torn_last_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"method": "ips", "steps_per_epoch": 10}))
    epoch = {"kind": "epoch", "epoch": 1, "step": 10, "train_accuracy": 0.5, "test_accuracy": 0.6, "test_ece": 0.1}
    lines = [json.dumps({**RECORD, "step": 5}), json.dumps(epoch), json.dumps({**RECORD, "step": 15})]
    (tmp_path / METRICS).write_text("\n".join(lines) + "\n" + lines[2][:17])  # killed in the middle of a write
    assert [r["step"] for r in read_metrics(tmp_path)] == [5, 10, 15]
    assert epoch_records(tmp_path) == [epoch]
    method, curves = run_curves(tmp_path)
    assert method == "ips" and curves["loss"] == ([0.5, 1.5], [RECORD["loss"]] * 2)
    assert curves["test_accuracy"] == ([1], [0.6])


def test_a_resumed_log_continues_after_the_record_of_its_epoch(tmp_path):
    records = [{**RECORD, "step": 1}, {"kind": "epoch", "epoch": 1, "step": 2}, {**RECORD, "step": 3},
               {"kind": "epoch", "epoch": 2, "step": 4}, {**RECORD, "step": 5}]
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "st')
    log = MetricsLog(tmp_path, resume_after_epoch=2)  # the state was saved after epoch 2: step 5 is trained again
    log.append({**RECORD, "step": 5})
    log.close()
    assert read_metrics(tmp_path) == [*records[:4], {**RECORD, "step": 5}]
    assert (tmp_path / METRICS).read_text().count("\n") == 5  # the torn line is gone, not glued to the next record
    with pytest.raises(ValueError, match="holds no record of epoch 3"):
        MetricsLog(tmp_path, resume_after_epoch=3)


def test_json_files_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_json(path, {"state": "running", "step": 1})
    with open(path) as reader:  # a reader that opened the file before the next write ...
        write_json(path, {"state": "running", "step": 2})
        assert json.loads(reader.read()) == {"state": "running", "step": 1}  # ... reads the whole old version
    assert json.loads(path.read_text()) == {"state": "running", "step": 2}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"state": "finished", "step": 3})
    assert json.loads(path.read_text()) == {"state": "running", "step": 2}  # a failed write leaves the old file
    assert os.listdir(tmp_path) == ["status.json"]  # and no temporary file behind


GOOD_STATUS = '{"state": "finished", "progress": 1.0, "epoch": 1, "epochs": 1}'
GOOD_STEP = '{"kind": "step", "step": 3, "loss": 1.5, "ce": 1.2, "kd": 0.3}'


@pytest.mark.parametrize("status,launch,config,metrics,why", [
    ('{"state": "running", "epoch": 1e999}', "{}", "{}", "",
     "status.json: epoch must be a whole number from 0 to inf; got 'inf'"),
    (GOOD_STATUS, '{"queued_at": 1e20}', "{}", "", "launch.json: queued_at must be a number from 0 to 2.53402e+11"),
    (GOOD_STATUS, '{"queued_at": Infinity}', "{}", "", "launch.json: queued_at must be a number from 0 to "),
    (GOOD_STATUS, "{}", "{}", '{"kind": "step", "loss": 1.0}',
     "metrics.jsonl line 1: the step record's step must be a whole number from 0 to inf; got 'None'"),
    (GOOD_STATUS, "{}", '{"steps_per_epoch": "thirty"}', GOOD_STEP,
     "config.json: steps_per_epoch must be a whole number from 1 to inf; got 'thirty'"),
    (GOOD_STATUS, '{"processes": 2, "process": {"gpus": "0; rm"}}', "{}", "",
     "launch.json: process gpus must be a whole number from 0 to inf; got '0; rm'"),
    ('{"state": ["running"]}', "{}", "{}", "", "status.json: state must be text; got \"['running']\""),
])
def test_a_malformed_run_folder_reads_as_unreadable_saying_why_and_draws_no_curves(tmp_path, status, launch, config,
                                                                                     metrics, why):
    run_dir = tmp_path / "crafted"
    run_dir.mkdir()
    for name, text in (("status.json", status), ("launch.json", launch), ("config.json", config),
                       ("metrics.jsonl", metrics + "\n")):
        (run_dir / name).write_text(text)
    info = read_run_info(run_dir)
    assert info.state == "unreadable" and info.message.startswith(f"unreadable: {why}")
    assert info.row()[4] == "unreadable"
    assert run_curves(run_dir)[1] in ({}, {m: ([], []) for m in ("loss", "ce", "kd", "train_accuracy",
                                                                      "test_accuracy", "test_ece")})


def test_a_well_formed_run_folder_still_reads_and_draws(tmp_path):
    run_dir = tmp_path / "good"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(GOOD_STATUS)
    (run_dir / "config.json").write_text('{"method": "ips", "steps_per_epoch": 12}')
    (run_dir / "metrics.jsonl").write_text(GOOD_STEP + "\n" + json.dumps(
        {"kind": "epoch", "epoch": 1, "step": 12, "test_accuracy": 0.8, "test_nll": float("nan")}) + "\n")
    info = read_run_info(run_dir)
    assert (info.state, info.method, info.best_test_accuracy, info.epoch) == ("finished", "ips", 0.8, 1)
    method, curves = run_curves(run_dir)
    assert method == "ips" and curves["kd"] == ([0.25], [0.3]) and curves["test_accuracy"] == ([1], [0.8])


def test_a_study_spec_with_a_malformed_field_is_skipped_not_the_whole_list(tmp_path):
    good = comparison_spec("good", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0])
    save_spec(good, tmp_path)
    bad = save_spec(comparison_spec("bad", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0]), tmp_path)
    bad.write_text(bad.read_text().replace(f'"created": {json.loads(bad.read_text())["created"]}', '"created": "now"'))
    assert json.loads(bad.read_text())["created"] == "now"
    assert [spec.study_id for spec in list_studies(tmp_path)] == ["good"]


def test_epoch_records_and_curves_parse_only_what_was_appended_since_the_last_read(tmp_path, monkeypatch):
    """The runs table reads every run's epochs at each refresh and the Train tab a watched run's curves every few
    seconds; a 58 MB metrics.jsonl took 3.4 s each time."""
    from explorer.training import metrics_file, runfolder

    checked = []
    for module in (metrics_file, runfolder):  # every parse of a record checks it: count them
        monkeypatch.setattr(module, "check_record", lambda record, where: checked.append(where) or record)
    metrics = tmp_path / "metrics.jsonl"
    (tmp_path / "config.json").write_text(json.dumps({"method": "ips", "steps_per_epoch": 2}))

    def line(kind, epoch, accuracy=0.5):
        return json.dumps({"kind": kind, "epoch": epoch, "step": epoch, "test_accuracy": accuracy}) + "\n"

    metrics.write_text(line("step", 1) * 50 + line("epoch", 1) + '{"kind": "ep')  # a torn last line
    assert [r["epoch"] for r in epoch_records(tmp_path)] == [1] and len(checked) == 51
    with metrics.open("a") as file:
        file.write('och", "epoch": 2, "test_accuracy": 0.6}\n' + line("step", 3))
    assert [r["epoch"] for r in epoch_records(tmp_path)] == [1, 2] and len(checked) == 53  # 2 lines, not 53
    assert epoch_records(tmp_path)[-1]["test_accuracy"] == 0.6 and len(checked) == 53
    method, curves = run_curves(tmp_path)  # the curves share what was read: nothing is parsed again
    assert method == "ips" and len(checked) == 53 and curves["loss"][0] == [0.5] * 50 + [1.5]
    assert curves["test_accuracy"] == ([1, 2], [0.5, 0.6])
    with metrics.open("r+") as file:  # --resume truncates after epoch 1 and writes on: the same file, longer
        file.truncate(len(line("step", 1) * 50 + line("epoch", 1)))
        file.seek(0, os.SEEK_END)
        file.write(line("step", 2) * 5 + line("epoch", 2, accuracy=0.9))
    assert [(r["epoch"], r["test_accuracy"]) for r in epoch_records(tmp_path)] == [(1, 0.5), (2, 0.9)]
    assert checked[-1] == "metrics.jsonl line 57"  # read again from the start
