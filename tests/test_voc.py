"""Pascal VOC 2012 read through torchvision's loaders, on a tiny fake VOCdevkit written to a temporary folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.checkpoints import save_checkpoint
from explorer.data import DatasetError
from explorer.data.scenes import IGNORE, load_dense_dataset
from explorer.data.voc import VOC_CLASSES, load_voc
from explorer.models import build_model
from explorer.training.runfolder import read_json
from explorer.transfer.loop import main

ANNOTATION = """<annotation><filename>{name}.jpg</filename><size><width>40</width><height>20</height><depth>3</depth>
</size>{objects}</annotation>"""
OBJECT = """<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>
<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _fake_voc(root, objects_per_image=1):
    """Two images per split (40x20 RGB), a palette mask each (a 'dog' square, a border of 255), one annotation each."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    names = {"train": ["a1", "a2"], "val": ["b1", "b2"]}
    for split, split_names in names.items():
        for kind in ("Segmentation", "Main"):
            (voc / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(split_names) + "\n")
        for name in split_names:
            Image.fromarray(np.full((20, 40, 3), 120, np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            mask = np.zeros((20, 40), np.uint8)
            mask[0, :] = 255
            mask[5:15, 10:30] = VOC_CLASSES.index("dog") + 1
            palette_image = Image.fromarray(mask, mode="P")
            palette_image.putpalette([v for i in range(256) for v in (i, i, i)])  # VOC's masks carry a palette
            palette_image.save(voc / "SegmentationClass" / f"{name}.png")
            objects = "".join(OBJECT.format(cls=cls, x0=11, y0=6, x1=30, y1=15)
                              for cls in ("dog", "person")[:objects_per_image])
            (voc / "Annotations" / f"{name}.xml").write_text(ANNOTATION.format(name=name, objects=objects))
    return root


def test_voc_segmentation_keeps_classes_and_the_ignored_border(tmp_path):
    voc = load_voc("segmentation", _fake_voc(tmp_path), False, 16)
    assert voc.name == "voc" and voc.class_names == VOC_CLASSES and voc.channels == 3
    assert voc.train.images.shape == (2, 3, 16, 16) and voc.test.masks.shape == (2, 16, 16)
    mask = voc.test.masks[0]
    assert set(mask.unique().tolist()) == {0, VOC_CLASSES.index("dog") + 1, IGNORE}  # nearest: no blended values
    assert (mask[0] == IGNORE).all()


def test_voc_detection_scales_boxes_with_the_image(tmp_path):
    voc = load_dense_dataset("voc", "detection", data_root=_fake_voc(tmp_path, objects_per_image=2), image_size=80)
    # VOC's pixel numbers are 1-based and inclusive: x 11..30 of 40 is [10, 30) -> [20, 60) at 80 wide; y doubles x 4
    assert voc.train.boxes[0].tolist() == [[20.0, 20.0, 60.0, 60.0]] * 2
    assert voc.train.labels[0].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert torch.equal(voc.train.masks, torch.zeros(2, 80, 80, dtype=torch.uint8))


def test_a_missing_voc_folder_or_an_empty_split_is_one_clear_message(tmp_path):
    with pytest.raises(DatasetError, match=r"was not found under .*VOCdevkit/VOC2012; .*--data-root .*--download") \
            as missing:
        load_voc("segmentation", tmp_path / "nowhere", False, 32)
    assert "download=True" not in str(missing.value)  # torchvision's advice, which names no flag of ours
    root = _fake_voc(tmp_path / "empty")
    (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    with pytest.raises(DatasetError, match="lists no image for one of its splits"):
        load_voc("segmentation", root, False, 32)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_a_transfer_run_fine_tunes_an_rgb_backbone_on_voc(tmp_path, task):
    card = {"dataset": "cifar10", "model": "small_cnn", "method": "ce", "in_channels": 3, "num_classes": 10,
            "class_names": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": [32, 32]}
    backbone = save_checkpoint(tmp_path / "rgb", build_model("small_cnn", 3, 10), card)
    root = _fake_voc(tmp_path / "data", objects_per_image=2)
    assert main(["--task", task, "--backbone", str(backbone), "--dataset", "voc", "--data-root", str(root),
                 "--image-size", "32", "--batch-size", "2", "--epochs", "1", "--warmup-epochs", "0", "--device", "cpu",
                 "--out", str(tmp_path / "runs"), "--run-id", "voc"]) == 0
    saved = read_json(tmp_path / "runs" / "voc" / "card.json")
    assert saved["dataset"] == "voc" and saved["num_classes"] == 20 and saved["image_size"] == [32, 32]
    assert set(saved["test_metrics"]) == ({"miou", "pixel_accuracy"} if task == "segmentation"
                                          else {"map", "map_50", "map_75"})
