"""MNIST-style IDX files (MNIST, Fashion-MNIST, ...), parsed by hand with NumPy.

An IDX file is a big-endian header followed by raw values:
bytes 0-1 are zero, byte 2 is the dtype code (``0x08`` uint8, ``0x09`` int8,
``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), byte 3
the number of dimensions ``d``, then ``d`` uint32 sizes, then
``prod(sizes)`` values. A folder holds (each optionally gzipped, ``.gz``)::

    train-images-idx3-ubyte   (N_train, H, W) uint8
    train-labels-idx1-ubyte   (N_train,)
    t10k-images-idx3-ubyte    (N_test, H, W) uint8
    t10k-labels-idx1-ubyte    (N_test,)

(``train-images.idx3-ubyte`` spellings and a ``raw/`` subfolder, as
torchvision stores them, are found too.) Images become ``(N, 1, H, W)``
float32 divided by 255. A folder whose own name contains ``fashion`` gets the
Fashion-MNIST class names, otherwise classes are ``"0".."9"``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.data.scale import pixels_to_unit
from fitscope.data.validation import build_dataset
from fitscope.errors import DataError

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
PARTS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _candidates(stem: str) -> list[str]:
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (or ``folder/raw``) by part name, or None if any is missing."""
    for base in (folder, folder / "raw"):
        found = {}
        for part, stem in PARTS.items():
            path = next((base / c for c in _candidates(stem) if (base / c).is_file()), None)
            if path is not None:
                found[part] = path
        if len(found) == len(PARTS):
            return found
    return None


def has_idx_files(folder: Path) -> bool:
    """Whether ``folder`` (or ``folder/raw``) holds at least one MNIST-style IDX file."""
    return any((base / c).is_file() for base in (folder, folder / "raw")
               for stem in PARTS.values() for c in _candidates(stem))


def missing_idx_files(folder: Path) -> list[str]:
    """The part file names (without ``.gz``) that ``folder`` lacks."""
    return [stem for stem in PARTS.values()
            if not any((base / c).is_file() for base in (folder, folder / "raw") for c in _candidates(stem))]


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (plain or gzipped) into an array of its declared shape and dtype.

    Raises:
        DataError: bad magic number, unknown dtype code, unreadable gzip
            stream, or fewer/more value bytes than the header declares.
    """
    where = path.name
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"cannot read {where}: unreadable or truncated gzip stream ({type(err).__name__}: {err})"
        ) from None
    if len(raw) < 4:
        raise DataError(
            f"cannot read {where}: expected an IDX header of at least 4 bytes, got {len(raw)} (truncated file)"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"cannot read {where}: expected an IDX magic number 0x0000TTDD with type code TT in "
            f"08/09/0B/0C/0D/0E, got 0x{raw[:4].hex().upper()}"
        )
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DataError(f"cannot read {where}: expected a {header_bytes}-byte header for {ndim} dimensions, "
                        f"got {len(raw)} bytes (truncated file)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_bytes
    if got < expected:
        raise DataError(f"cannot read {where}: expected {expected} bytes of values for shape {shape}, "
                        f"got {got} (truncated file)")
    if got > expected:
        raise DataError(f"cannot read {where}: expected {expected} bytes of values for shape {shape}, "
                        f"got {got} (trailing bytes; is the header right?)")
    values = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=header_bytes)
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def _images(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3:
        raise DataError(f"images in {path.name}: expected 3 dimensions (N, H, W), got shape {array.shape}")
    x = array[:, None, :, :]
    return pixels_to_unit(x) if array.dtype == np.uint8 else x.astype(np.float32)


def load_idx_folder(folder: Path, files: dict[str, Path]) -> Dataset:
    """Load an MNIST-style folder from its four IDX files (see :func:`find_idx_files`)."""
    arrays = {part: read_idx(path) for part, path in files.items()}
    for part in ("train_labels", "test_labels"):
        if arrays[part].ndim != 1:
            raise DataError(
                f"labels in {files[part].name}: expected 1 dimension (N,), got shape {arrays[part].shape}"
            )
    x_train = _images(arrays["train_images"], files["train_images"])
    x_test = _images(arrays["test_images"], files["test_images"])
    fashion = "fashion" in folder.resolve().name.lower()
    classes = FASHION_CLASSES if fashion else None
    if classes is not None and max(arrays["train_labels"].max(initial=0), arrays["test_labels"].max(initial=0)) >= 10:
        classes = None
    return build_dataset(
        folder.name, x_train, arrays["train_labels"], x_test, arrays["test_labels"],
        where=folder.name, classes=classes,
        source=f"{folder} (IDX files: {', '.join(p.name for p in files.values())})",
        meta=dict(format="idx", files={part: str(path) for part, path in files.items()},
                  scaling="uint8 / 255", classes_from="Fashion-MNIST names" if classes else "digits"),
    )
