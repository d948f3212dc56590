"""Memory-mapped inputs: large .npy/.npz data load without a copy, splits and conversions go to the cache
once, and Ray tasks read the shared arrays from the object store without copying them.

Allocation is measured two ways while a load or a training unit runs: ``tracemalloc`` (every NumPy
allocation) and the peak of the process's resident anonymous memory (``RssAnon``, sampled every
millisecond: what a copy by NumPy, torch or anything else would add; the pages of a map or of
Ray's object store are file or shared memory, not anonymous).
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fitscope.data import is_memory_mapped, load
from fitscope.data import mapped as mapped_module
from fitscope.data.mapped import mapped_file
from fitscope.errors import DataError

MB = 2**20


# ------------------------------------------------------------------ helpers


def rss_anon() -> int:
    """Resident anonymous memory of this process, bytes (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon line in /proc/self/status")


class Allocation:
    """Peak NumPy allocation (tracemalloc) and peak growth of resident anonymous memory inside the block."""

    def __enter__(self):
        self._stop = threading.Event()
        self.base = self.rss_peak = rss_anon()

        def sample():
            while not self._stop.is_set():
                self.rss_peak = max(self.rss_peak, rss_anon())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        tracemalloc.start()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, rss_anon())
        self.traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.rss = self.rss_peak - self.base
        return False


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder for the test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def warm(tmp_path, monkeypatch, cache):
    """Every path of a load run once on tiny files, so that a measurement leaves out first imports."""
    import fitscope.data.npz as npz_module

    with monkeypatch.context() as patch:
        patch.setattr(mapped_module, "COPY_IN_MEMORY_BELOW", 0)
        patch.setattr(npz_module, "COPY_IN_MEMORY_BELOW", 0)
        patch.setenv("FITSCOPE_CACHE_DIR", str(tmp_path / "warm-cache"))
        x, y = blobs(n=40)
        np.savez(tmp_path / "warm.npz", x=x, y=y)
        load(tmp_path / "warm.npz")
        load(save_folder(tmp_path / "warm", x=x, y=y))


def cached_files(cache: Path) -> dict[Path, int]:
    """The ``arrays/`` entries of the cache and their modification times."""
    return {p: p.stat().st_mtime_ns for p in sorted((cache / "arrays").glob("*.npy"))}


def assert_read_only_map(arr: np.ndarray, file: Path | None = None) -> None:
    assert is_memory_mapped(arr) and not arr.flags.writeable and not arr.flags.owndata
    assert arr.dtype == np.float32 and arr.flags.c_contiguous
    if file is not None:
        assert mapped_file(arr) == file.resolve()


def big_split(n_train=16_000, n_test=4_000, d=1024, seed=0):
    """float32 inputs in fitscope's layout, already split: 82 MB of inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, d), dtype=np.float32)
    y = np.arange(n_train + n_test) % 10
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def blobs(n=60, k=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return rng.normal(size=(n, d)) + 3.0 * y[:, None], y


def save_folder(folder: Path, **arrays) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
    return folder


# ------------------------------------------------------------------ large files, measured


def test_big_npy_folder_is_mapped_where_it_lies_without_a_copy(tmp_path, cache, warm):
    x_train, y_train, x_test, y_test = big_split()
    folder = save_folder(tmp_path / "big", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    size = x_train.nbytes + x_test.nbytes

    with Allocation() as used:
        data = load(folder)
    assert used.traced < 0.1 * size, f"load allocated {used.traced / MB:.1f} MB for {size / MB:.0f} MB of inputs"
    assert used.rss < 0.1 * size, f"resident memory grew {used.rss / MB:.1f} MB for {size / MB:.0f} MB"

    assert_read_only_map(data.x_train, folder / "x_train.npy")
    assert_read_only_map(data.x_test, folder / "x_test.npy")
    assert data.meta["storage"] == {"x_train": f"mapped: {(folder / 'x_train.npy').resolve()}",
                                    "x_test": f"mapped: {(folder / 'x_test.npy').resolve()}"}
    assert not (cache / "arrays").exists()  # nothing to compute, nothing written
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_train, y_train)
    assert data.y_train.dtype == np.int64 and data.n_classes == 10


def test_big_npz_is_extracted_once_into_the_cache_and_mapped(tmp_path, cache, warm):
    x_train, y_train, x_test, y_test = big_split()
    path = tmp_path / "big.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)  # stored, at odd offsets
    size = x_train.nbytes + x_test.nbytes

    with Allocation() as used:
        data = load(path)
    assert used.traced < 0.1 * size, f"load allocated {used.traced / MB:.1f} MB for {size / MB:.0f} MB of inputs"
    assert used.rss < 0.1 * size, f"resident memory grew {used.rss / MB:.1f} MB for {size / MB:.0f} MB"
    entries = cached_files(cache)
    assert len(entries) == 2  # x_train and x_test extracted; the labels (small) were read
    for arr in (data.x_train, data.x_test):
        assert_read_only_map(arr)
        assert mapped_file(arr) in entries and arr.ctypes.data % arr.dtype.alignment == 0
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)

    again = load(path)  # the same entries, not written again
    assert cached_files(cache) == entries
    assert {mapped_file(again.x_train), mapped_file(again.x_test)} == set(entries)


def test_big_single_set_of_uint8_images_is_split_and_scaled_into_the_cache_once(tmp_path, cache, warm):
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(7_000, 32, 32, 3), dtype=np.uint8)  # channels last, 21 MB
    y = np.arange(len(x)) % 10
    folder = save_folder(tmp_path / "pixels", x=x, y=y)
    size = len(x) * 3 * 32 * 32 * 4  # the float32 inputs: 86 MB

    with Allocation() as used:
        data = load(folder, seed=5, test_fraction=0.25)
    assert used.traced < 0.1 * size, f"load allocated {used.traced / MB:.1f} MB for {size / MB:.0f} MB of inputs"
    assert used.rss < 0.1 * size, f"resident memory grew {used.rss / MB:.1f} MB for {size / MB:.0f} MB"
    entries = cached_files(cache)
    assert len(entries) == 2 and data.input_shape == (3, 32, 32)
    assert data.meta["scaling"] == "uint8 / 255" and data.meta["layout"] == "moved the channel axis first"
    for arr in (data.x_train, data.x_test):
        assert_read_only_map(arr)
        assert mapped_file(arr) in entries

    # what the whole array in memory gives, split by scikit-learn directly
    reference = np.moveaxis(x, 3, 1).astype(np.float32) / np.float32(255)
    ref_train, ref_test, ref_y_train, ref_y_test = train_test_split(
        reference, y, test_size=0.25, random_state=5, stratify=y)
    np.testing.assert_array_equal(data.x_train, ref_train)
    np.testing.assert_array_equal(data.x_test, ref_test)
    np.testing.assert_array_equal(data.y_train, ref_y_train)
    np.testing.assert_array_equal(data.y_test, ref_y_test)

    again = load(folder, seed=5, test_fraction=0.25)
    assert mapped_file(again.x_train) in entries
    assert cached_files(cache) == entries  # the same split again: read from the cache, nothing rewritten


# ------------------------------------------------------------------ the rules on small files


@pytest.fixture
def copy_to_cache(monkeypatch):
    """Every copy goes to the cache, however small (the rule for large data, on tiny files)."""
    monkeypatch.setattr(mapped_module, "COPY_IN_MEMORY_BELOW", 0)
    import fitscope.data.npz as npz_module

    monkeypatch.setattr(npz_module, "COPY_IN_MEMORY_BELOW", 0)


def test_npy_folder_equals_npz_and_small_copies_stay_in_memory(tmp_path, cache):
    x, y = blobs(n=60)
    folder = save_folder(tmp_path / "one", x=x, y=y)
    np.savez(tmp_path / "one.npz", x=x, y=y)
    a, b = load(folder, seed=3, test_fraction=0.25), load(tmp_path / "one.npz", seed=3, test_fraction=0.25)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.classes == b.classes and a.meta["split_seed"] == 3 and a.meta["format"] == "npy"
    assert a.meta["storage"] == {"x_train": "memory", "x_test": "memory"}  # float64 split: a small copy
    assert not is_memory_mapped(a.x_train) and not (cache / "arrays").exists()


def test_cached_split_equals_the_in_memory_one_and_follows_the_file(tmp_path, cache, copy_to_cache, monkeypatch):
    x, y = blobs(n=80, seed=2)
    folder = save_folder(tmp_path / "d", x=x, y=y)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    mapped = load(folder, seed=1)
    for arr in (mapped.x_train, mapped.x_test):
        assert_read_only_map(arr)
        assert (cache / "arrays") in mapped_file(arr).parents
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(tmp_path / "elsewhere"))  # the npz's copies: a cache of their own
    with_npz = load(tmp_path / "d.npz", seed=1)
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(cache))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(mapped, field), getattr(with_npz, field))

    before = cached_files(cache)
    assert load(folder, seed=1).meta["storage"] == mapped.meta["storage"] and cached_files(cache) == before
    other_seed = load(folder, seed=2)
    assert mapped_file(other_seed.x_train) not in before and len(cached_files(cache)) == 4

    np.save(tmp_path / "new.npy", x + 100.0)
    os.replace(tmp_path / "new.npy", folder / "x.npy")  # an edited source gets a new entry
    edited = load(folder, seed=1)
    assert mapped_file(edited.x_train) not in before
    from sklearn.model_selection import train_test_split

    np.testing.assert_array_equal(edited.x_train, train_test_split((x + 100.0).astype(np.float32), test_size=0.2,
                                                                   random_state=1, stratify=y)[0])


def test_stored_aligned_npz_member_is_mapped_in_place(tmp_path, cache, copy_to_cache):
    x_train, x_test = np.arange(120, dtype=np.float32).reshape(30, 4), np.ones((10, 4), np.float32)
    y_train, y_test = np.arange(30) % 2, np.arange(10) % 2
    path = tmp_path / "aligned.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, arr in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, arr)
            info = zipfile.ZipInfo(f"{name}.npy")
            # pad the local header's extra field (id 0xD935, as zipalign does) so that the data lands on 64 bytes
            header = 30 + len(info.filename) + len(buffer.getvalue()) - arr.nbytes
            pad = (-(archive.fp.tell() + header + 4)) % 64
            info.extra = (0xD935).to_bytes(2, "little") + pad.to_bytes(2, "little") + b"\0" * pad
            archive.writestr(info, buffer.getvalue())
    data = load(path)
    assert_read_only_map(data.x_train, path)
    assert_read_only_map(data.x_test, path)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    assert not (cache / "arrays").exists()  # mapped where it lies: nothing extracted


def test_compressed_npz_member_is_extracted(tmp_path, cache, copy_to_cache):
    x, y = blobs(n=40)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x_train=x[:30].astype(np.float32), y_train=y[:30], x_test=x[30:].astype(np.float32),
                        y_test=y[30:])
    data = load(path)
    assert_read_only_map(data.x_train)
    np.testing.assert_array_equal(data.x_train, x[:30].astype(np.float32))
    info = zipfile.ZipFile(path).getinfo("x_train.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 20
    raw[start + 40:start + 80] = bytes(40)  # the member's compressed bytes damaged, the directory intact
    time.sleep(0.05)  # a new modification time: not the cache entry of the intact file
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"^array 'x_train' in c.npz: unreadable or truncated"):
        load(path)


def test_cache_that_cannot_be_written_gives_the_data_in_memory(tmp_path, monkeypatch, copy_to_cache):
    from sklearn.model_selection import train_test_split

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(blocker))
    x, y = blobs(n=50)
    x = x.astype(np.float32)
    data = load(save_folder(tmp_path / "d", x=x, y=y), seed=0)
    assert data.meta["storage"] == {"x_train": "memory", "x_test": "memory"}
    assert data.x_train.flags.writeable and not is_memory_mapped(data.x_train)
    x_train, x_test = train_test_split(x, test_size=0.2, random_state=0, stratify=y)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)


def test_checks_read_a_map_in_blocks_and_name_the_row_of_the_file(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(mapped_module, "BLOCK_BYTES", 64)  # 2 rows of 8 float32 values a block
    x = np.zeros((40, 8), np.float32)
    x[37, 5] = np.nan
    save_folder(tmp_path / "nan", x=x, y=np.arange(40) % 2)
    with pytest.raises(DataError, match=r"^inputs in nan: expected finite numbers, got nan at index 37$"):
        load(tmp_path / "nan")
    big = np.zeros((40, 8))
    big[33, 1] = 1e39
    save_folder(tmp_path / "wide", x_train=big, y_train=np.arange(40) % 2, x_test=big[:5], y_test=np.arange(5) % 2)
    with pytest.raises(DataError, match=r"^inputs in wide \(train split\): expected numbers within float32 range "
                                        r"\(\|x\| < 3.4e38\), got 1e\+39 at index 33$"):
        load(tmp_path / "wide")


def test_npy_folder_bad_files(tmp_path, cache):
    x, y = blobs(n=20)
    save_folder(tmp_path / "names", inputs=x, targets=y)
    with pytest.raises(DataError, match=r"^\.npy files in .*names: expected one of the layouts x_train/y_train"):
        load(tmp_path / "names")
    save_folder(tmp_path / "obj", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"^array 'x.npy' in obj: expected numbers or strings, got an object array"):
        load(tmp_path / "obj")
    folder = save_folder(tmp_path / "cut", x=x, y=y)
    raw = (folder / "x.npy").read_bytes()
    (folder / "x.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"^array 'x.npy' in cut: unreadable or truncated"):
        load(folder)
    save_folder(tmp_path / "named", x_train=x[:15], y_train=np.array(["a", "b"])[y[:15] % 2], x_test=x[15:],
                y_test=np.array(["a", "b"])[y[15:] % 2])
    assert load(tmp_path / "named").classes == ("a", "b")


# ------------------------------------------------------------------ Ray: once into the object store, no copy per task


def unit_on_shared(with_test, *, x, y, x_test, y_test):
    """A training unit on the shared arrays: what it received, and what training it allocated."""
    from fitscope.train import TrainConfig, train_ensemble

    base, chain = x, []
    while base is not None:
        chain.append(f"{type(base).__module__}.{type(base).__name__}")
        base = getattr(base, "base", None)
    config = TrainConfig(epochs=1, batch_size=256)
    warm = dict(x_test=x_test[:4], y_test=y_test[:4]) if with_test else {}
    train_ensemble("mlp:8x1", x[:64], y[:64], config=config, seeds=[1, 2], n_classes=10, **warm)  # imports, warm-up
    with Allocation() as used:
        result = train_ensemble("mlp:8x1", x, y, config=config, seeds=[1, 2], n_classes=10,
                                **(dict(x_test=x_test, y_test=y_test) if with_test else {}))
    return {"writeable": x.flags.writeable, "owndata": x.flags.owndata, "chain": chain, "mapped": is_memory_mapped(x),
            "traced": used.traced, "rss": used.rss, "train_acc": float(result.train_acc[:, -1].mean())}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # a test dependency: never skipped

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    module = sys.modules[__name__]  # the workers cannot import this test module by name
    ray.cloudpickle.register_pickle_by_value(module)
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(module)
    if started:
        ray.shutdown()


def test_ray_tasks_read_mapped_arrays_from_the_object_store_without_copying(tmp_path, cache, ray_cluster):
    from fitscope.runs import make_executor

    x_train, y_train, x_test, y_test = big_split(n_train=10_000, n_test=1_000, d=1024)  # 41 MB + 4 MB
    folder = save_folder(tmp_path / "d", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load(folder)
    assert_read_only_map(data.x_train)
    # the Dataset's view of a map, and an np.memmap as a user may pass it (pickled as bytes unless unwrapped)
    memmap = np.load(folder / "x_train.npy", mmap_mode="r")
    shared = dict(x=memmap, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
    with make_executor("ray", threads_per_task=1) as ex:
        out = dict(ex.map_unordered(unit_on_shared, [True], shared=shared))[0]
    # a read-only view of Ray's shared memory, not an array of its own (a copy) nor a memmap pickled as bytes
    assert out["writeable"] is False and out["owndata"] is False
    assert out["chain"][0] == "numpy.ndarray" and out["chain"][-1].startswith("ray."), out["chain"]
    # training (with test rows) reads it in batches: no full copy, no mask of its size
    size = x_train.nbytes
    assert out["traced"] < 0.5 * size, f"the unit allocated {out['traced'] / MB:.1f} MB for {size / MB:.0f} MB"
    assert out["rss"] < 0.5 * size, f"the unit's resident memory grew {out['rss'] / MB:.1f} MB for {size / MB:.0f} MB"
    assert out["train_acc"] > 0


def test_local_executor_trains_on_a_read_only_map_without_copying_it(tmp_path, cache):
    from fitscope.runs import make_executor

    x_train, y_train, x_test, y_test = big_split(n_train=10_000, n_test=1_000, d=1024)
    data = load(save_folder(tmp_path / "d", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))
    shared = dict(x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
    with make_executor("local") as ex:
        out = dict(ex.map_unordered(unit_on_shared, [True], shared=shared))[0]
    assert out["writeable"] is False and out["mapped"] is True
    size = x_train.nbytes
    assert out["traced"] < 0.5 * size and out["rss"] < 0.5 * size, (out["traced"] / MB, out["rss"] / MB)
    assert out["train_acc"] > 0
