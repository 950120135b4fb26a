"""Streamed image-file data: the Tiny-ImageNet layout, the pair sampler, the loaders, bad files and the decision."""

import io
import math
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.data import (
    LOAD_PEAK,
    Dataset,
    DatasetError,
    available_memory,
    choose_data_mode,
    load_dataset,
    open_dataset,
    read_image,
    tinyimagenet,
)
from explorer.data.streaming import (
    BatchStream,
    ImageBatch,
    PairBatchSampler,
    StreamedDataset,
    channel_stats,
    image_loader,
    pair_loader,
)
from explorer.ips import build_class_index, default_patch_size

# Tiny-ImageNet in miniature: wnids.txt deliberately unsorted; labels follow the sorted wnids
WNIDS = ("n03000001", "n01000001", "n02000001")
COLOURS = {"n01000001": (220, 30, 30), "n02000001": (30, 220, 30), "n03000001": (30, 30, 220)}
NAMES = {"n01000001": "red thing, crimson", "n02000001": "green thing", "n03000001": "blue thing"}


def _tiny_imagenet(root, train_per_class=4, val_per_class=2):
    """tiny-imagenet-200 under ``root`` in the official layout, with solid-colour 64x64 JPEGs."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    words = ["n00000007\tunused entry"] + [f"{wnid}\t{NAMES[wnid]}" for wnid in WNIDS]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    annotations = []
    for wnid in WNIDS:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(train_per_class):
            Image.new("RGB", (64, 64), COLOURS[wnid]).save(images / f"{wnid}_{i}.JPEG", "JPEG")
        for _ in range(val_per_class):
            name = f"val_{len(annotations)}.JPEG"
            Image.new("RGB", (64, 64), COLOURS[wnid]).save(base / "val" / "images" / name, "JPEG")
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    Image.new("RGB", (64, 64)).save(base / "test" / "images" / "test_0.JPEG", "JPEG")
    return base


def _noise_folder(root, counts, seed=0):
    """An ImageFolder of random-noise PNGs of varying sizes: class name -> number of images."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            h, w = rng.integers(9, 30, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


# --------------------------------------------------------------------------------------------------
# Tiny-ImageNet by name
# --------------------------------------------------------------------------------------------------
def test_tinyimagenet_layout_is_parsed_into_sorted_wnid_labels(tmp_path):
    base = _tiny_imagenet(tmp_path)
    train, val, names = tinyimagenet.tinyimagenet_files(tmp_path)
    assert names == ("red thing, crimson", "green thing", "blue thing")  # sorted wnids: n01, n02, n03
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert train.path(4) == str(base / "train" / "n02000001" / "images" / "n02000001_0.JPEG")
    # val_0, val_1 are n03 (blue, label 2), val_2, val_3 n01 (0), val_4, val_5 n02 (1)
    assert [p.decode().rsplit("/", 1)[1] for p in val.paths] == [f"val_{i}.JPEG" for i in range(6)]
    assert val.labels.tolist() == [2, 2, 0, 0, 1, 1]


def test_tinyimagenet_in_memory_is_64px_rgb_with_16px_patches(tmp_path):
    _tiny_imagenet(tmp_path)
    ds = load_dataset.__wrapped__("tinyimagenet", tmp_path)
    assert ds.train_images.shape == (12, 3, 64, 64) and ds.test_images.shape == (6, 3, 64, 64)
    assert ds.train_images.dtype == torch.uint8 and ds.num_classes == 3
    assert default_patch_size(ds.image_size) == 16 and ds.crop_padding == 8 and ds.flip
    for label, wnid in enumerate(sorted(WNIDS)):  # solid JPEG colours survive within a few levels
        mean_colour = ds.train_images[ds.train_labels == label].float().mean(dim=(0, 2, 3))
        assert torch.allclose(mean_colour, torch.tensor(COLOURS[wnid], dtype=torch.float), atol=4)
    assert ds.test_labels.tolist() == [2, 2, 0, 0, 1, 1]
    pixels = ds.train_images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert ds.mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-12)
    assert ds.std == pytest.approx(pixels.std(1).tolist(), abs=1e-12)


def test_tinyimagenet_streams_by_name(tmp_path):
    _tiny_imagenet(tmp_path)
    data = open_dataset("tinyimagenet", tmp_path, data_mode="stream", num_workers=0)
    assert isinstance(data, StreamedDataset) and data.image_size == (64, 64) and len(data.train) == 12
    memory = load_dataset.__wrapped__("tinyimagenet", tmp_path)
    assert data.mean == pytest.approx(memory.mean, abs=1e-12) and data.std == pytest.approx(memory.std, abs=1e-12)


def test_tinyimagenet_download_fetches_the_standard_archive(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, md5=None, **_):
        calls.append((url, md5))
        _tiny_imagenet(tmp_path / "from-archive")
        (tmp_path / "from-archive" / "tiny-imagenet-200").rename(Path(download_root) / "tiny-imagenet-200")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    train, _, _ = tinyimagenet.tinyimagenet_files(tmp_path, download=True)
    assert calls == [("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")]
    assert len(train) == 12
    tinyimagenet.tinyimagenet_files(tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1


def test_tinyimagenet_download_without_internet_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*_, **__):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match=r"could not download tinyimagenet from http://cs231n.*not known"):
        tinyimagenet.tinyimagenet_files(tmp_path, download=True)


def _remove_images(folder, keep):
    for path in sorted(folder.iterdir())[keep:]:
        path.unlink()


BAD_LAYOUTS = {
    "no folder": (lambda base: base.rename(base.parent / "elsewhere"),
                  r"not found under .*tiny-imagenet-200.*--download"),
    "no wnids.txt": (lambda base: (base / "wnids.txt").unlink(), r"wnids\.txt is missing"),
    "empty wnids.txt": (lambda base: (base / "wnids.txt").write_text("\n"), r"wnids\.txt lists no class"),
    "no words for a wnid": (lambda base: (base / "words.txt").write_text("n01000001\tred\n"),
                            r"words\.txt has no name for n02000001, n03000001"),
    "no val annotations": (lambda base: (base / "val" / "val_annotations.txt").unlink(),
                           r"val_annotations\.txt is missing"),
    "val image not listed": (lambda base: Image.new("RGB", (64, 64)).save(base / "val" / "images" / "extra.JPEG"),
                             r"val image .*val/images/extra\.JPEG is not listed in .*val_annotations\.txt"),
    "listed val image absent": (lambda base: (base / "val" / "images" / "val_3.JPEG").unlink(),
                                r"val_annotations\.txt lists val_3\.JPEG, which is not in .*val/images"),
    "annotation of an unknown wnid": (
        lambda base: (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n"),
        r"val_annotations\.txt line 1 .* does not name a wnid"),
    "missing class folder": (lambda base: (base / "train" / "n02000001" / "images").rename(base / "moved"),
                             r"class folder .*train/n02000001/images is missing"),
    "empty class folder": (lambda base: _remove_images(base / "train" / "n03000001" / "images", keep=0),
                           r"class folder .*train/n03000001/images holds no images"),
    "class folder with one image": (lambda base: _remove_images(base / "train" / "n01000001" / "images", keep=1),
                                    r"class folder .*train/n01000001/images holds only one image"),
}


@pytest.mark.parametrize("case", BAD_LAYOUTS)
def test_each_bad_tinyimagenet_layout_names_what_is_wrong(tmp_path, case):
    break_layout, message = BAD_LAYOUTS[case]
    break_layout(_tiny_imagenet(tmp_path))
    with pytest.raises(DatasetError, match=message) as err:
        tinyimagenet.tinyimagenet_files(tmp_path)
    assert "\n" not in str(err.value)


def bomb_png(path, side):
    """A 60-byte PNG whose header claims ``side`` x ``side`` pixels (its pixel data is empty)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("mode", ["stream", "memory"])
def test_an_image_folder_needs_two_images_per_class_in_both_data_modes(tmp_path, mode):
    _noise_folder(tmp_path / "f", {"cat": 1, "dog": 6})
    with pytest.raises(DatasetError, match=r"class folder .*f/cat holds only one image for training"):
        open_dataset(f"imagefolder:{tmp_path / 'f'}", data_mode=mode, num_workers=0)


def test_a_training_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    with pytest.raises(ValueError, match=r"is 10000x10000 pixels; training images up to 40 megapixels are read"):
        read_image(str(bomb_png(tmp_path / "large.png", 10_000)), (8, 8))


def test_in_memory_a_class_left_without_two_readable_images_is_refused(tmp_path):
    """Every file is decoded up front in memory, so a class whose images are all unreadable is known at once."""
    folder = _noise_folder(tmp_path / "f", {"dog": 6})
    (folder / "cat").mkdir()
    for i in range(6):
        bomb_png(folder / "cat" / f"{i}.png", 20_000)
    with pytest.raises(DatasetError, match=r"class folder .*f/cat holds no readable images for training"):
        load_dataset.__wrapped__(f"imagefolder:{folder}", image_size=8)


def test_streamed_image_folder_with_an_empty_class_folder_names_it(tmp_path):
    _noise_folder(tmp_path / "f", {"cat": 3, "dog": 3})
    (tmp_path / "f" / "emu").mkdir()
    with pytest.raises(DatasetError, match=r"cannot read .*/f as an image folder.*no valid file for the classes emu"):
        open_dataset(f"imagefolder:{tmp_path / 'f'}", data_mode="stream", num_workers=0)


# --------------------------------------------------------------------------------------------------
# The pair sampler
# --------------------------------------------------------------------------------------------------
CLASS_SIZES = [5, 3, 1, 7, 2]  # 18 images; class 2 has a single image
LABELS = torch.repeat_interleave(torch.arange(len(CLASS_SIZES)), torch.tensor(CLASS_SIZES))[
    torch.randperm(18, generator=torch.Generator().manual_seed(3))]  # classes interleaved over the indices


def _sampler(batch_size=4, seed=0, rank=0, world_size=1, with_partners=True):
    return PairBatchSampler(build_class_index(LABELS), batch_size, seed, rank, world_size, with_partners)


def test_every_image_is_an_anchor_exactly_once_per_epoch_with_a_same_class_partner():
    sampler = _sampler(batch_size=4)
    assert len(sampler) == 5
    single = int(torch.nonzero(LABELS == 2))
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = sampler.global_batches()
        assert [len(anchors) for anchors, _ in batches] == [4, 4, 4, 3, 3]  # ceil(18 / 4) batches, sizes differ <= 1
        anchors, partners = torch.cat([a for a, _ in batches]), torch.cat([p for _, p in batches])
        assert sorted(anchors.tolist()) == list(range(18))
        assert torch.equal(LABELS[partners], LABELS[anchors])
        alone = anchors == single
        assert (partners[~alone] != anchors[~alone]).all() and (partners[alone] == single).all()
        # one process: each yielded batch is that batch's anchors followed by their partners
        assert list(sampler) == [torch.cat([a, p]).tolist() for a, p in batches]


def test_partners_are_drawn_afresh_each_epoch_among_all_other_members():
    sampler = _sampler()
    seen = {i: set() for i in range(18)}
    for epoch in range(60):
        sampler.set_epoch(epoch)
        for anchors, partners in sampler.global_batches():
            for a, p in zip(anchors.tolist(), partners.tolist(), strict=True):
                seen[a].add(p)
    for i in range(18):
        members = set(torch.nonzero(LABELS == LABELS[i]).flatten().tolist())
        assert seen[i] == (members - {i} if len(members) > 1 else {i})


def test_epochs_differ_and_the_same_seed_and_epoch_repeat():
    first = _sampler(seed=7)
    order = {}
    for epoch in (0, 1, 2):
        first.set_epoch(epoch)
        order[epoch] = list(first)
    assert order[0] != order[1] and order[1] != order[2] and order[0] != order[2]
    again = _sampler(seed=7)
    again.set_epoch(1)
    assert list(again) == order[1]
    other_seed = _sampler(seed=8)
    other_seed.set_epoch(1)
    assert list(other_seed) != order[1]


@pytest.mark.parametrize("world_size, batch_size", [(3, 6), (2, 5), (4, 8)])
def test_ranks_read_disjoint_shards_that_cover_every_global_batch(world_size, batch_size):
    ranks = [_sampler(batch_size, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 3):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        global_batches = ranks[0].global_batches()
        yielded = [list(sampler) for sampler in ranks]
        for b, (anchors, partners) in enumerate(global_batches):
            shards = [torch.tensor(per_rank[b]).view(2, -1) for per_rank in yielded]  # anchors row, partners row
            assert torch.equal(torch.cat([s[0] for s in shards]), anchors)  # in order, so disjoint and covering
            assert torch.equal(torch.cat([s[1] for s in shards]), partners)
            assert max(s.shape[1] for s in shards) - min(s.shape[1] for s in shards) <= 1
            assert min(s.shape[1] for s in shards) >= 1


def test_anchors_only_and_impossible_shards():
    sampler = _sampler(batch_size=4, with_partners=False)
    assert sorted(i for batch in sampler for i in batch) == list(range(18))
    with pytest.raises(ValueError, match="18 training images in batches of at most 4 give some batch only 3 anchors, "
                                         "fewer than the 4 processes"):
        _sampler(batch_size=4, world_size=4)
    with pytest.raises(ValueError, match="rank must be in"):
        _sampler(rank=2, world_size=2)


# --------------------------------------------------------------------------------------------------
# Loaders: streamed bytes equal the in-memory bytes
# --------------------------------------------------------------------------------------------------
def test_streamed_batches_equal_the_in_memory_tensors_for_the_same_indices(tmp_path):
    folder = _noise_folder(tmp_path / "f", {"ant": 7, "bee": 5, "cow": 9})
    memory = load_dataset.__wrapped__(f"imagefolder:{folder}", image_size=12)
    data = open_dataset(f"imagefolder:{folder}", image_size=12, data_mode="stream", num_workers=2)
    assert isinstance(data, StreamedDataset) and data.name == memory.name and data.class_names == memory.class_names
    assert torch.equal(data.train.labels, memory.train_labels) and torch.equal(data.test.labels, memory.test_labels)
    assert data.mean == pytest.approx(memory.mean, abs=1e-6) and data.std == pytest.approx(memory.std, abs=1e-6)
    assert data.crop_padding == memory.crop_padding and data.flip == memory.flip
    stream = BatchStream(pair_loader(data, 5, seed=2, num_workers=2), "cpu")
    anchors_seen = []
    for _ in range(2):  # two epochs, through the endless next()
        for _ in range(math.ceil(len(data.train) / 5)):
            batch = stream.next()
            assert batch.anchor_images.dtype == torch.uint8 and batch.anchor_images.shape[1:] == (3, 12, 12)
            assert torch.equal(batch.anchor_images, memory.train_images[batch.anchors])
            assert torch.equal(batch.partner_images, memory.train_images[batch.partners])
            assert torch.equal(batch.labels, memory.train_labels[batch.anchors])
            assert torch.equal(memory.train_labels[batch.partners], batch.labels)
            anchors_seen.append(batch.anchors)
    assert stream.epochs_started == 2 and stream.skipped == 0
    half = len(anchors_seen) // 2
    assert sorted(torch.cat(anchors_seen[:half]).tolist()) == list(range(len(data.train)))
    assert not torch.equal(torch.cat(anchors_seen[:half]), torch.cat(anchors_seen[half:]))
    test_batches = list(BatchStream(image_loader(data.test, data.image_size, 2, num_workers=2), "cpu").epoch())
    assert torch.equal(torch.cat([b.images for b in test_batches]), memory.test_images)
    # the in-memory statistics are float32 sums, the streamed ones exact: equal to float32 precision
    assert torch.allclose(data.normalize(memory.test_images), memory.normalize(memory.test_images), atol=1e-5)


def test_holdout_of_a_streamed_folder_matches_the_in_memory_holdout(tmp_path):
    folder = _noise_folder(tmp_path / "f", {"ant": 10, "bee": 10})
    memory = load_dataset.__wrapped__(f"imagefolder:{folder}", image_size=8).holdout()
    data = open_dataset(f"imagefolder:{folder}", image_size=8, data_mode="stream", num_workers=0).holdout(num_workers=0)
    assert data.name == memory.name and len(data.train) == 12 and len(data.test) == 4  # of 16 training images
    assert torch.equal(data.train.labels, memory.train_labels) and torch.equal(data.test.labels, memory.test_labels)
    images = torch.cat([b.images for b in BatchStream(image_loader(data.train, (8, 8), 4, 0), "cpu").epoch()])
    assert torch.equal(images, memory.train_images)
    assert data.mean == pytest.approx(memory.mean, abs=1e-6) and data.std == pytest.approx(memory.std, abs=1e-6)


def test_plain_cross_entropy_streams_anchors_without_partners(tmp_path):
    data = open_dataset(f"imagefolder:{_noise_folder(tmp_path / 'f', {'a': 4, 'b': 6})}", image_size=8,
                        data_mode="stream", num_workers=0)
    batches = list(BatchStream(pair_loader(data, 3, with_partners=False, num_workers=0), "cpu").epoch())
    assert all(isinstance(b, ImageBatch) for b in batches) and [len(b.labels) for b in batches] == [3, 3, 2]
    assert sorted(torch.cat([b.indices for b in batches]).tolist()) == list(range(8))


def test_a_stream_seeked_to_a_position_continues_with_the_batches_drawn_from_there(tmp_path):
    data = open_dataset(f"imagefolder:{_noise_folder(tmp_path / 'f', {'a': 5, 'b': 6})}", image_size=8,
                        data_mode="stream", num_workers=0)  # 9 training images: 3 batches of 3
    fresh = BatchStream(pair_loader(data, 3, seed=4, num_workers=0), "cpu")
    drawn = [fresh.next().anchors.tolist() for _ in range(8)]  # 2 epochs and 2 batches of the third
    for position in (0, 2, 3, 4, 7):
        resumed = BatchStream(pair_loader(data, 3, seed=4, num_workers=0), "cpu")
        resumed.seek(position)
        assert [resumed.next().anchors.tolist() for _ in range(8 - position)] == drawn[position:]


# --------------------------------------------------------------------------------------------------
# Unreadable images
# --------------------------------------------------------------------------------------------------
def test_unreadable_images_are_skipped_counted_and_warned_about_once(tmp_path):
    folder = tmp_path / "f"
    for split in ("train", "test"):
        _noise_folder(folder / split, {"a": 5, "b": 5}, seed=len(split))
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(png, "PNG")
    (folder / "train" / "a" / "truncated.png").write_bytes(png.getvalue()[:60])
    (folder / "train" / "b" / "junk.png").write_bytes(b"this is not an image")
    data = open_dataset(f"imagefolder:{folder}", image_size=8, data_mode="stream", num_workers=0)
    bad = {i for i in range(len(data.train)) if data.train.path(i).endswith(("truncated.png", "junk.png"))}
    assert len(data.train) == 12 and len(bad) == 2
    loader = pair_loader(data, 4, seed=1, num_workers=0)
    expected_pairs = [[(a, p) for a, p in zip(anchors.tolist(), partners.tolist(), strict=True)
                       if a not in bad and p not in bad] for anchors, partners in loader.batch_sampler.global_batches()]
    stream = BatchStream(loader, "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(stream.epoch()) + list(stream.epoch())
    ours = [w for w in caught if "unreadable image" in str(w.message)]
    assert len(ours) == 1 and ("truncated.png" in str(ours[0].message) or "junk.png" in str(ours[0].message))
    assert stream.skipped == 2 and stream.unreadable == bad
    got = [list(zip(b.anchors.tolist(), b.partners.tolist(), strict=True)) for b in batches[:len(expected_pairs)]]
    assert got == expected_pairs  # exactly the pairs without an unreadable image, in order
    assert all(b.anchor_images.shape[0] == len(b.anchors) == len(b.partner_images) for b in batches)


# --------------------------------------------------------------------------------------------------
# In memory or streamed
# --------------------------------------------------------------------------------------------------
def test_choose_data_mode_compares_the_decoded_bytes_with_the_budget():
    assert choose_data_mode("auto", 1000, memory_budget=1000) == "memory"
    assert choose_data_mode("auto", 1001, memory_budget=1000) == "stream"
    assert choose_data_mode("memory", 10**15, memory_budget=1) == "memory"
    assert choose_data_mode("stream", 1, memory_budget=10**15) == "stream"
    assert choose_data_mode("auto", 10**15) == "stream"  # a petabyte fits nowhere
    with pytest.raises(ValueError, match="unknown data mode 'disk'; use one of auto, memory, stream"):
        choose_data_mode("disk", 1)
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
    assert 0 < available_memory() <= int(meminfo["MemTotal"].split()[0]) * 1024


def test_open_dataset_streams_a_folder_only_when_loading_it_exceeds_the_budget(tmp_path):
    folder = _noise_folder(tmp_path / "f", {"a": 5, "b": 5})  # 10 images of 3 x 8 x 8 = 1,920 bytes
    name = f"imagefolder:{folder}"
    assert LOAD_PEAK["imagefolder"] == 9.0  # loading them in memory peaks at 9 x 1,920 = 17,280 bytes
    assert isinstance(open_dataset(name, image_size=8, memory_budget=17280), Dataset)
    assert isinstance(open_dataset(name, image_size=8, memory_budget=17279, num_workers=0), StreamedDataset)
    assert open_dataset("digits") is load_dataset("digits", "data", False, 32)  # the cached in-memory dataset
    with pytest.raises(DatasetError, match="digits cannot be streamed"):
        open_dataset("digits", data_mode="stream")


def test_channel_stats_are_exact_over_batches():
    images = torch.randint(0, 256, (11, 3, 5, 7), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = channel_stats(images.split(4))
    pixels = images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-14)
    assert std == pytest.approx(pixels.std(1).tolist(), abs=1e-14)
    assert channel_stats([torch.full((2, 1, 2, 2), 7, dtype=torch.uint8)])[1] == (1e-3,)  # constant: the floor
