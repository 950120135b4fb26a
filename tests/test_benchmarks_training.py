"""The benchmark command on synthetic tensors: every section and row, with numbers (speed goals are not tested)."""

import re

import pytest

from explorer.benchmarks.training import main, synthetic_dataset


def test_synthetic_tensors_have_the_asked_shape_and_balanced_classes():
    dataset = synthetic_dataset((3, 16, 12), classes=4, batch_size=8)
    assert dataset.train_images.shape == (200, 3, 16, 12) and dataset.train_images.dtype.is_floating_point is False
    assert dataset.train_labels.bincount().tolist() == [50] * 4
    assert dataset.name == "synthetic 3x16x12, 4 classes" and (dataset.crop_padding, dataset.flip) == (2, True)


def test_the_benchmark_reports_every_setting_on_synthetic_tensors(capsys):
    # one untimed warm-up step: a first call pays one-time costs that made a pipeline efficiency print as 0.00
    assert main(["--image-shape", "3x16x16", "--classes", "4", "--batch-size", "8", "--patch-sizes", "4,8",
                 "--repeats", "2", "--warmup", "1", "--rounds", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "synthetic 3x16x16, 4 classes" in out.splitlines()[0]
    swaps = re.findall(r"(uint8|float32).*?(\d+) px .* ratio +([\d.]+) x", out)
    assert [(dtype, px) for dtype, px, _ in swaps] == [("uint8", "4"), ("uint8", "8"), ("float32", "4"),
                                                       ("float32", "8")]
    rows = re.findall(r"^  (\S+(?: --equal-compute)?) +(fp32) +([\d.]+) +(\d+) +([\d.]+) +([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["ce", "cskd", "ips", "ips-margin", "ips-correct", "ls", "mixup", "cutmix", "tfkd",
                                    "pskd", "dlb", "zipf", "bake", "kd", "cskd --equal-compute", "ips --equal-compute",
                                    "ips-margin --equal-compute", "ips-correct --equal-compute", "dlb --equal-compute"]
    assert float(rows[0][4]) == 1.0 and all(float(r[2]) > 0 and float(r[5]) > 0 for r in rows)


def test_a_bad_shape_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--image-shape", "32x32"])
    assert "--image-shape must be CxHxW, e.g. 3x32x32; got '32x32'" in capsys.readouterr().err
