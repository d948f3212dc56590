"""Loading every file kind a user brings, from tiny files written by the tests."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct

import numpy as np
import pytest

from fitscope.data import load
from fitscope.errors import ConfigError, DataError

# ---------------------------------------------------------------- writers


def blobs(n=60, k=3, d=5, seed=0):
    """``n`` points in ``k`` separated Gaussian blobs, every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + 3.0 * y[:, None]
    return x, y


def write_csv(path, header, rows, sep=","):
    lines = ([sep.join(header)] if header else []) + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def idx_bytes(array, code=0x08):
    array = np.asarray(array)
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(dtype).tobytes()


def write_mnist(folder, *, n_train=30, n_test=10, gz=True, size=28, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in parts.items():
        raw = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return parts


def cifar_record(n, labels_key, k, seed, *, bytes_keys=True):
    rng = np.random.default_rng(seed)
    record = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
              labels_key: [int(v) for v in np.arange(n) % k]}
    return {k_.encode(): v for k_, v in record.items()} if bytes_keys else record


def write_cifar10(folder, *, n=6, protocol=2, bytes_keys=True):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps(cifar_record(n, "labels", 10, i, bytes_keys=bytes_keys), protocol=protocol))
    (folder / "test_batch").write_bytes(
        pickle.dumps(cifar_record(n, "labels", 10, 9, bytes_keys=bytes_keys), protocol=protocol))
    names = [n_.encode() for n_ in ("airplane", "automobile", "bird", "cat", "deer",
                                     "dog", "frog", "horse", "ship", "truck")]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol))
    return folder


def write_cifar100(folder, *, n_train=20, n_test=10):
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        record = cifar_record(n, "fine_labels", 100, seed)
        record[b"coarse_labels"] = [0] * n
        (folder / name).write_bytes(pickle.dumps(record))
    fine = [f"class{c:03d}".encode() for c in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": [b"a"] * 20}))
    return folder


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


# ---------------------------------------------------------------- npz


@pytest.mark.parametrize(
    "keys",
    [
        ("x_train", "y_train", "x_test", "y_test"),
        ("X_train", "Y_train", "X_test", "Y_test"),
        ("train_images", "train_labels", "test_images", "test_labels"),
    ],
)
def test_npz_split_layouts(tmp_path, keys):
    x, y = blobs()
    path = tmp_path / "blobs.npz"
    np.savez(path, **dict(zip(keys, (x[:40], y[:40], x[40:], y[40:]))))
    data = load(path)
    assert data.name == "blobs" and data.kind == "vector"
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_allclose(data.x_train, x[:40].astype(np.float32))
    np.testing.assert_array_equal(data.y_test, y[40:])
    assert data.classes == ("0", "1", "2")
    assert data.meta["keys"] == list(keys)


@pytest.mark.parametrize("keys", [("x", "y"), ("X", "y"), ("images", "labels"), ("data", "labels")])
def test_npz_single_set_is_split_stratified_with_seed(tmp_path, keys):
    x, y = blobs(n=60)
    path = tmp_path / "one.npz"
    np.savez(path, **dict(zip(keys, (x, y))))
    a = load(path, seed=3, test_fraction=0.25)
    b = load(path, seed=3, test_fraction=0.25)
    c = load(path, seed=4, test_fraction=0.25)
    assert len(a.y_test) == math.ceil(0.25 * 60) and len(a.y_train) == 45
    np.testing.assert_array_equal(np.bincount(a.y_test), [5, 5, 5])  # stratified
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.meta["split_seed"] == 3 and "seed=3" in a.source


def test_npz_uint8_images_channels_last_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "img.npz", x_train=x[:12], y_train=y[:12], x_test=x[12:], y_test=y[12:],
             classes=np.array(["cat", "dog"]))
    data = load(tmp_path / "img.npz")
    assert data.kind == "image" and data.input_shape == (3, 6, 6)
    np.testing.assert_allclose(data.x_train[1, 2], x[1, :, :, 2] / 255.0, rtol=1e-6)
    assert data.classes == ("cat", "dog")
    assert data.meta["scaling"] == "uint8 / 255"


def test_npz_grayscale_without_channel_axis_and_signals(tmp_path):
    np.savez(tmp_path / "gray.npz", x=np.zeros((10, 28, 28), np.uint8), y=np.arange(10) % 2)
    assert load(tmp_path / "gray.npz").input_shape == (1, 28, 28)
    np.savez(tmp_path / "sig.npz", x=np.zeros((10, 2, 40), np.float32), y=np.arange(10) % 2)
    data = load(tmp_path / "sig.npz")
    assert data.kind == "signal" and data.input_shape == (2, 40)


def test_npz_string_and_one_hot_labels(tmp_path):
    x, y = blobs(n=30)
    names = np.array(["b", "c", "a"])[y]
    np.savez(tmp_path / "s.npz", x=x, y=names)
    data = load(tmp_path / "s.npz")
    assert data.classes == ("a", "b", "c")
    np.savez(tmp_path / "h.npz", x_train=x[:20], y_train=np.eye(3)[y[:20]], x_test=x[20:], y_test=np.eye(3)[y[20:]])
    np.testing.assert_array_equal(load(tmp_path / "h.npz").y_train, y[:20])


def test_npz_object_array_is_refused_without_pickle(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="object array.*allow_pickle=False"):
        load(tmp_path / "obj.npz")


def test_npz_unknown_keys_and_truncated_and_not_an_archive(tmp_path):
    np.savez(tmp_path / "k.npz", foo=np.zeros((4, 2)), bar=np.zeros(4))
    with pytest.raises(DataError, match=r"keys in k.npz: expected one of the layouts .*got foo, bar|got bar, foo"):
        load(tmp_path / "k.npz")
    x, y = blobs()
    np.savez(tmp_path / "t.npz", x=x, y=y)
    raw = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="t.npz"):
        load(tmp_path / "t.npz")
    np.save(tmp_path / "a.npy", x)
    os.replace(tmp_path / "a.npy", tmp_path / "a.npz")
    with pytest.raises(DataError, match="expected a NumPy .npz archive"):
        load(tmp_path / "a.npz")


# ---------------------------------------------------------------- csv


def test_csv_default_label_column_named_label(tmp_path):
    x, y = blobs(n=30, d=3)
    rows = [[*xi.round(4), yi] for xi, yi in zip(x, y)]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "label"], rows)
    data = load(path, seed=1)
    assert data.input_shape == (3,) and data.n_classes == 3
    assert data.meta["label_column"] == "label" and data.meta["header"] is True
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)  # standardized with train stats
    np.testing.assert_allclose(data.x_train.std(axis=0), 1, atol=1e-4)
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == sorted(y.tolist())


def test_csv_named_label_column_with_string_classes(tmp_path):
    x, y = blobs(n=30, d=2)
    species = np.array(["virginica", "setosa", "versicolor"])[y]
    rows = [[s, *xi.round(4)] for s, xi in zip(species, x)]
    path = write_csv(tmp_path / "flowers.csv", ["species", "w", "h"], rows)
    data = load(path, label_column="species")
    assert data.classes == ("setosa", "versicolor", "virginica")  # sorted names
    assert data.meta["label_encoding"] == "sorted class names"
    assert data.input_shape == (2,)
    # the same column by index, as a CLI string, and negative indices
    for column in (0, "0", -3):
        assert load(path, label_column=column).classes == data.classes


def test_csv_no_header_last_column_default_and_target_name(tmp_path):
    x, y = blobs(n=24, d=2)
    rows = [[*xi.round(3), yi] for xi, yi in zip(x, y)]
    data = load(write_csv(tmp_path / "nohead.csv", None, rows))
    assert data.meta["header"] is False and data.meta["label_column"] == "column 2"
    rows_t = [[yi, *xi.round(3)] for xi, yi in zip(x, y)]
    data = load(write_csv(tmp_path / "target.csv", ["Target", "f1", "f2"], rows_t, sep=";"))
    assert data.meta["label_column"] == "Target" and data.meta["delimiter"] == ";"


def test_csv_label_column_errors(tmp_path):
    x, y = blobs(n=12, d=2)
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[*xi.round(2), yi] for xi, yi in zip(x, y)])
    with pytest.raises(ConfigError, match="label_column: expected a column of t.csv"):
        load(path, label_column="nope")
    with pytest.raises(ConfigError, match=r"label_column: expected a column index in \[-3, 2\]"):
        load(path, label_column=5)


# ---------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    parts = write_mnist(tmp_path / "mnist", gz=gz)
    data = load(tmp_path / "mnist")
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(data.x_train[3, 0], parts["train-images-idx3-ubyte"][3] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, parts["t10k-labels-idx1-ubyte"])
    assert data.classes == tuple(str(c) for c in range(10)) and data.meta["format"] == "idx"


def test_idx_fashion_names_and_torchvision_raw_layout(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", size=8)
    data = load(tmp_path / "FashionMNIST")
    assert data.classes[0] == "T-shirt/top" and data.input_shape == (1, 8, 8)


def test_idx_truncated_bad_magic_and_missing(tmp_path):
    folder = tmp_path / "m"
    write_mnist(folder, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected 23520 bytes .* got 23420 \(truncated file\)"):
        load(folder)
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="truncated"):
        load(folder)
    path.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="IDX magic number"):
        load(folder)
    path.unlink()
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load(folder)


def test_idx_truncated_gzip(tmp_path):
    folder = tmp_path / "m"
    write_mnist(folder, gz=True)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*(truncated|unreadable)"):
        load(folder)


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol, bytes_keys", [(2, True), (pickle.DEFAULT_PROTOCOL, True), (5, False)])
def test_cifar10_folder(tmp_path, protocol, bytes_keys):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol, bytes_keys=bytes_keys)
    data = load(folder)
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (6, 3, 32, 32)
    assert data.classes[:2] == ("airplane", "automobile") and data.n_classes == 10
    first = cifar_record(6, "labels", 10, 1)[b"data"][0]
    np.testing.assert_allclose(data.x_train[0, 1].ravel(), first[1024:2048] / 255.0, rtol=1e-6)  # green plane
    # the folder torchvision unpacks into
    assert load(tmp_path).x_train.shape == (30, 3, 32, 32)


def test_cifar100_folder_uses_fine_labels(tmp_path):
    folder = write_cifar100(tmp_path / "cifar-100-python")
    data = load(folder)
    assert data.n_classes == 100 and data.classes[5] == "class005"
    assert data.x_train.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(data.y_train, np.arange(20) % 100)


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("payload, name", [(_RunsShell, os.system.__module__ + ".system"), (_Evals, "builtins.eval")])
def test_malicious_cifar_pickle_is_refused_without_executing(tmp_path, payload, name):
    folder = write_cifar10(tmp_path / "c")
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if payload is _RunsShell else f"open({str(marker)!r}, 'w').close()"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": payload(code), b"labels": [0]}))
    with pytest.raises(DataError) as info:
        load(folder)
    assert str(info.value) == (
        f"refusing to unpickle {name} from data_batch_3: only plain containers, bytes, numbers and numpy arrays are allowed"
    )
    assert not marker.exists()


def test_cifar_truncated_missing_and_wrong_shape(tmp_path):
    folder = write_cifar10(tmp_path / "c")
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot read test_batch: expected a Python pickle, unreadable or truncated"):
        load(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data in test_batch: expected shape \(n, 3072\)"):
        load(folder)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="missing data_batch_5"):
        load(folder)


# ---------------------------------------------------------------- image folders


@pytest.mark.parametrize("test_dir", ["test", "val"])
def test_image_folder_with_train_and_test(tmp_path, test_dir):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), (test_dir, 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                write_png(tmp_path / "pets" / split / c / f"{i}.png", rng.integers(0, 256, size=(5, 7)))
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load(tmp_path / "pets")
    assert data.x_train.shape == (8, 1, 5, 7) and data.x_test.shape == (4, 1, 5, 7)
    assert data.classes == ("cat", "dog") and data.meta["skipped_files"] == 1
    assert data.meta["layout"] == f"train/{test_dir}"
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(data.y_train), [4, 4])


def test_image_folder_class_dirs_rgb_split_with_seed(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("a", "b", "c"):
        for i in range(5):
            write_png(tmp_path / "shapes" / c / f"{i}.png", rng.integers(0, 256, size=(4, 4, 3)))
    write_png(tmp_path / "shapes" / "a" / "gray.png", np.zeros((4, 4)))  # mixed modes -> RGB for all
    data = load(tmp_path / "shapes", seed=2, test_fraction=0.25)
    assert data.input_shape == (3, 4, 4)
    assert len(data.y_train) + len(data.y_test) == 16 and len(data.y_test) == 4
    np.testing.assert_array_equal(load(tmp_path / "shapes", seed=2, test_fraction=0.25).x_test, data.x_test)


def test_image_folder_odd_size_and_unreadable_image(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "imgs" / c / f"{i}.png", np.zeros((4, 4)))
    write_png(tmp_path / "imgs" / "b" / "7.png", np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"image size in imgs: expected 4x4 \(as a/0.png\), got 4x5 in b/7.png"):
        load(tmp_path / "imgs")
    (tmp_path / "imgs" / "b" / "7.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image b/7.png in imgs"):
        load(tmp_path / "imgs")
