"""The run folder's files: metrics.jsonl append-only (cost per record, torn lines, resume), atomic JSON writes."""

import json
import os
import sys
from pathlib import Path

import pytest

from explorer import checkpoints
from explorer.training.runfolder import METRICS, MetricsLog, epoch_records, read_metrics, run_curves, write_json

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
