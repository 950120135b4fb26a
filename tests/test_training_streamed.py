"""Streamed training runs (--data-mode stream) on a generated Tiny-ImageNet miniature: the run folder, the pairs
each step trains on, resume, and the shards of torchrun's ranks."""

import json
import math
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from explorer.checkpoints import load_checkpoint
from explorer.data import load_dataset, open_dataset, tinyimagenet
from explorer.data.streaming import PairBatchSampler, derived_seed
from explorer.ips import build_class_index, same_class_partners
from explorer.training import loop, streamed
from explorer.training.config import parse_config
from explorer.training.runs import RunManager
from explorer.training.streamed import open_streams
from tests.helpers import ROOT, stop_at_step
from tests.test_streaming import _noise_folder, bomb_png

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, BATCH = 5, 20, 4, 32
TRAIN_IMAGES = CLASSES * TRAIN_PER_CLASS  # 100: ceil(100 / 32) = 4 steps per epoch


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tinyimagenet.write_miniature(root, CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS)
    return root


def _args(data_root, out, run_id, *extra):
    return ["--dataset", "tinyimagenet", "--data-root", str(data_root), "--data-mode", "stream", "--epochs", "1",
            "--batch-size", str(BATCH), "--device", "cpu", "--out", str(out), "--run-id", run_id, *extra]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_one_epoch_streamed_ips_run_on_tinyimagenet_writes_a_complete_run_folder(data_root, tmp_path):
    """Through the real command, with one corrupt training JPEG: skipped with a warning naming it, counted, and the
    run still finishes; the checkpoint evaluates to the recorded test accuracy and the run manager lists the run."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    corrupt = root / "tiny-imagenet-200" / "train" / "n09000002" / "images" / "n09000002_7.JPEG"
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "explorer.train", *_args(root, tmp_path / "runs", "t", "--log-every",
                                                                          "1")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"skipped unreadable image {corrupt}" in proc.stderr
    run_dir = tmp_path / "runs" / "t"
    config = json.loads((run_dir / "config.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    records = _records(run_dir)
    steps = math.ceil(TRAIN_IMAGES / BATCH)
    assert config["data_mode"] == "stream" and config["steps_per_epoch"] == steps == 4
    assert config["patch_size_used"] == 16  # Tiny-ImageNet's default: a 4x4 grid of 64 px images
    assert status["state"] == "finished" and status["step"] == steps and status["progress"] == 1.0
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["unreadable_images"] == 1 and 0 < epoch["train_accuracy"] <= 1 and epoch["kd"] > 0
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint.card["dataset"] == "tinyimagenet" and checkpoint.card["image_size"] == [64, 64]
    assert checkpoint.card["num_classes"] == CLASSES
    evaluated = subprocess.run([sys.executable, "-m", "explorer.evaluate", str(run_dir), "--data-root", str(root),
                                "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n"] == CLASSES * VAL_PER_CLASS
    assert result["accuracy"] == pytest.approx(epoch["test_accuracy"], abs=1e-6)
    manager = RunManager(tmp_path / "runs")
    try:
        (info,) = manager.runs()  # what the Train tab's runs table reads
    finally:
        manager.close()
    assert (info.run_id, info.dataset, info.state, info.epoch) == ("t", "tinyimagenet", "finished", 1)
    assert info.best_test_accuracy == pytest.approx(epoch["test_accuracy"])


def _recorded_run(monkeypatch, data_root, out, method):
    """A streamed run of ``method`` in this process, with each step's anchors, partners and correct count."""
    steps = []
    original = streamed.streamed_method_loss

    def recording(cfg, forward, dataset, batch, patch_size, generator, context=None):
        result = original(cfg, forward, dataset, batch, patch_size, generator, context)
        steps.append((batch.anchors.clone(), batch.partners.clone(), int(result.correct)))
        return result

    monkeypatch.setattr(loop, "streamed_method_loss", recording)
    assert loop.main(_args(data_root, out, method, "--method", method)) == 0
    return steps, _records(out / method)[-1]


def test_streamed_steps_train_on_the_samplers_pairs_and_count_accuracy_over_anchors(data_root, tmp_path,
                                                                                      monkeypatch):
    """Where the two modes agree: a streamed epoch's pairs are ``same_class_partners`` (the in-memory pairing rule)
    of one permutation, on the in-memory class index, drawn on a generator seeded by (seed, epoch). Where they
    differ: in memory the same rule draws on the run's device generator between augmentations, so the values
    differ; streamed, IPS and CS-KD of one seed see exactly the same pairs."""
    ips_steps, ips_epoch = _recorded_run(monkeypatch, data_root, tmp_path, "ips")
    cskd_steps, _ = _recorded_run(monkeypatch, data_root, tmp_path, "cskd")
    memory = load_dataset.__wrapped__("tinyimagenet", data_root)
    generator = torch.Generator().manual_seed(derived_seed(0, 0))
    anchors = torch.randperm(TRAIN_IMAGES, generator=generator)
    partners = same_class_partners(anchors, build_class_index(memory.train_labels, CLASSES), generator)
    assert len(ips_steps) == math.ceil(TRAIN_IMAGES / BATCH) == 4
    assert [len(a) for a, _, _ in ips_steps] == [25, 25, 25, 25]  # 100 anchors in 4 batches of equal size
    assert torch.equal(torch.cat([a for a, _, _ in ips_steps]), anchors)  # every image an anchor once
    assert torch.equal(torch.cat([p for _, p, _ in ips_steps]), partners)
    assert torch.equal(memory.train_labels[partners], memory.train_labels[anchors]) and (partners != anchors).all()
    for (a, p, _), (a2, p2, _) in zip(ips_steps, cskd_steps, strict=True):
        assert torch.equal(a, a2) and torch.equal(p, p2)
    correct = sum(c for _, _, c in ips_steps)
    assert correct > 0 and ips_epoch["train_accuracy"] == pytest.approx(correct / TRAIN_IMAGES, abs=1e-12)


def test_a_streamed_run_cancelled_and_resumed_reaches_the_weights_of_the_run_left_alone(data_root, tmp_path,
                                                                                      monkeypatch):
    """--equal-compute: 16 anchors per step, so epoch 2 starts in the middle of the sampler's first epoch (7
    batches): the stream continues from the step count, not from an epoch boundary."""
    args = ["--method", "ips", "--equal-compute", "--epochs", "2"]
    assert loop.main(_args(data_root, tmp_path, "alone", *args)) == 0
    stop_at_step(monkeypatch, 6)  # in epoch 2, after the state of epoch 1 was saved
    assert loop.main(_args(data_root, tmp_path, "cut", *args)) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert loop.main(["--resume", str(tmp_path / "cut")]) == 0
    alone, resumed = load_checkpoint(tmp_path / "alone").model.state_dict(), load_checkpoint(tmp_path / "cut")
    assert resumed.card["epoch"] == 2
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in alone.items())
    last = [{k: v for k, v in _records(tmp_path / run)[-1].items() if k not in ("elapsed", "images_per_s")}
            for run in ("alone", "cut")]
    assert last[0] == last[1]


def test_each_torchrun_rank_streams_its_own_shard_of_every_batch_with_its_own_generator(data_root):
    data = open_dataset("tinyimagenet", data_root, data_mode="stream", num_workers=0)
    cfg = parse_config(["--method", "ips", "--batch-size", str(BATCH), "--seed", "3"])
    ranks = [open_streams(cfg, data, torch.device("cpu"), rank, 2, local_world=64) for rank in (0, 1)]
    global_batches = PairBatchSampler(build_class_index(data.train_labels), BATCH, seed=3).global_batches()
    for anchors, partners in global_batches[:2]:
        shards = [streams.train.next() for streams in ranks]
        assert [len(shard.anchors) for shard in shards] == [13, 12]  # 25 anchors over 2 ranks
        assert torch.equal(torch.cat([shard.anchors for shard in shards]), anchors)  # disjoint, covering
        assert torch.equal(torch.cat([shard.partners for shard in shards]), partners)
    assert [streams.seed for streams in ranks] == [derived_seed(3, 0), derived_seed(3, 1)]
    assert ranks[0].seed != ranks[1].seed


def _one_image(base):
    for path in sorted((base / "train" / "n09000003" / "images").iterdir())[1:]:
        path.unlink()


def _empty_folder(base):
    shutil.rmtree(base / "train" / "n09000001" / "images")
    (base / "train" / "n09000001" / "images").mkdir()


BAD_INPUT = {
    "class folder with one image": (_one_image, r"class folder .*train/n09000003/images holds only one image"),
    "empty class folder": (_empty_folder, r"class folder .*train/n09000001/images holds no images"),
    "missing val annotation": (
        lambda base: (base / "val" / "val_annotations.txt").write_text(
            "".join((base / "val" / "val_annotations.txt").read_text().splitlines(keepends=True)[1:])),
        r"val image .*val/images/val_0\.JPEG is not listed in .*val_annotations\.txt"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
@pytest.mark.parametrize("mode", ["stream", "memory"])
def test_bad_tinyimagenet_input_ends_the_run_with_one_line_naming_the_file(data_root, tmp_path, capsys, case, mode):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    break_input, message = BAD_INPUT[case]
    break_input(root / "tiny-imagenet-200")
    assert loop.main([*_args(root, tmp_path / "runs", "bad"), "--data-mode", mode]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("explorer.train: error: ") and re.search(message, line), line


def test_an_empty_image_folder_ends_the_run_with_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert loop.main(["--dataset", f"imagefolder:{tmp_path / 'empty'}", "--data-mode", "stream",
                      "--out", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(r"cannot read .*/empty as an image folder: Couldn't find any class folder", line), line


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_a_decompression_bomb_in_an_image_folder_is_skipped_and_the_run_trains(tmp_path, mode, capsys):
    """A PNG whose header claims 400 megapixels (PIL's DecompressionBombError), one of 100 (above the pixel limit,
    refused before decoding) and one of junk: skipped as unreadable in both modes, the run finishes."""
    folder = _noise_folder(tmp_path / "f", {"a": 10, "b": 10})
    bomb_png(folder / "a" / "bomb.png", 20_000)
    bomb_png(folder / "b" / "large.png", 10_000)
    (folder / "b" / "junk.png").write_bytes(b"not an image")
    assert loop.main(["--dataset", f"imagefolder:{folder}", "--image-size", "8", "--data-mode", mode, "--epochs", "1",
                      "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "runs"), "--run-id", "r"]) == 0
    assert json.loads((tmp_path / "runs" / "r" / "status.json").read_text())["state"] == "finished"
    assert "DecompressionBomb" not in capsys.readouterr().err
