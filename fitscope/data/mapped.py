"""Memory-mapped inputs: data sets larger than one may copy per task.

A :class:`~fitscope.data.Dataset` loaded from ``.npy`` files or a large
``.npz`` archive holds its inputs as read-only memory maps, so loading it
costs page cache, not a copy in the process's memory, and every task that
reads it (the ``local`` executor's read-only views, Ray's object store)
shares the same pages. What is copied when (``N`` rows, inputs ``x``):

===========================================================  ==================================================
the source                                                   ``x_train``/``x_test`` of the Dataset
===========================================================  ==================================================
``.npy`` file: float32, C order, channels first (a missing    a read-only map of the user's file: nothing copied
grayscale channel axis is added as a view), already split
``.npz`` member of that kind, stored (``np.savez``) at an     a read-only map into the archive: nothing copied
offset aligned to its item size
``.npz`` member compressed (``np.savez_compressed``), or      extracted once into the cache as ``.npy`` (one
stored unaligned (``np.savez`` writes members at odd          sequential copy on disk), mapped from there
offsets: a map of it would be an unaligned array)
anything to compute: the split of a single set, uint8 ->      computed in blocks of rows and written once into the
float32 / 255, another dtype -> float32, channels last ->     cache as float32 ``.npy``, mapped from there; the
first, Fortran order                                         next load with the same file, seed and test share
                                                             maps the same cache file
===========================================================  ==================================================

Labels are always read into memory (int64, ``8 N`` bytes). The rule is
decided once per source, on the size of all its inputs: a ``.npz`` archive
smaller than :data:`COPY_IN_MEMORY_BELOW` (32 MiB) is read into memory as
NumPy reads it, and the copies of a data set whose float32 inputs are
smaller than that are made in memory (not worth a cache file); so are the
copies when the cache cannot be written (the data is still returned;
``Dataset.meta["storage"]`` says where each input array lives). The checks
of :mod:`fitscope.data.validation` read maps in blocks of rows, so they
never hold more than :data:`BLOCK_BYTES` of temporaries.

Why ``.npz`` goes through the cache: a zip member can be mapped only when it
is stored uncompressed, and ``np.savez`` stores each member right after its
local zip header, at an offset that is rarely a multiple of the item size
(NumPy then flags the array unaligned and runs its loops through buffered
copies; fitscope hands torch aligned arrays only). Extracting the member once
(sequential I/O, the cost of reading the file) gives an aligned ``.npy`` file
whose map every later load and task shares; an aligned stored member (a zip
written with alignment padding) is mapped where it lies. For data sets of
real size, save ``.npy`` files (``np.save``) into a folder: they are mapped
where they lie.

Cache files live in ``<cache>/arrays`` (:func:`fitscope.data.cache.cache_dir`),
named by the source file's path, size, modification time and inode and by
what was computed (key, split seed, test share), so an edited source file
gives a new entry; delete the folder at any time to reclaim the space.
A mapped file must not be rewritten in place while a Dataset maps it
(``np.save`` to a new name and rename is safe; truncating it is not).
"""

from __future__ import annotations

import itertools
import mmap
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fitscope.errors import DataError

COPY_IN_MEMORY_BELOW = 32 * 2**20
"""Bytes: a source whose inputs (as float32; a ``.npz`` file: its size) are smaller is copied in memory, not mapped."""

BLOCK_BYTES = 2 * 2**20
"""Bytes of rows processed at once when converting or checking a large array."""

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # the fixed 30 bytes of a zip local file header
_LOCAL_SIGNATURE = 0x04034B50


def mapped_file(arr: np.ndarray) -> Path | None:
    """The file that ``arr`` is a memory map of (through any chain of views), or None.

    Example:
        >>> x = np.load("x.npy", mmap_mode="r")        # doctest: +SKIP
        >>> mapped_file(np.asarray(x)[10:]).name       # doctest: +SKIP
        'x.npy'
    """
    base = arr
    while base is not None:
        if isinstance(base, np.memmap) and getattr(base, "filename", None):
            return Path(base.filename)
        base = getattr(base, "base", None)
    return None


def is_memory_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` (or the array it views) is backed by a memory map rather than by its own memory."""
    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def rows_per_block(x: np.ndarray, itemsize: int | None = None) -> int:
    """Rows of ``x`` (shape ``(N, ...)``) that fit :data:`BLOCK_BYTES`, at ``itemsize`` bytes a value (default x's)."""
    per_row = int(np.prod(x.shape[1:], dtype=np.int64)) * (itemsize or x.dtype.itemsize)
    return max(1, BLOCK_BYTES // max(per_row, 1))


def open_npy(path: Path, *, where: str) -> np.ndarray:
    """A read-only memory map of the ``.npy`` file ``path`` (``np.load(mmap_mode="r")``).

    Raises:
        DataError: the file is not a ``.npy`` file, is truncated, or holds
            Python objects (fitscope never unpickles).
    """
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "object" in str(err).lower() or "pickle" in str(err).lower():
            raise DataError(
                f"array {path.name!r} in {where}: expected numbers or strings, got an object array "
                f"(fitscope reads .npy files with allow_pickle=False; save plain numeric arrays)"
            ) from None
        raise DataError(f"array {path.name!r} in {where}: unreadable or truncated ({err})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"array {path.name!r} in {where}: unreadable or truncated "
                        f"({type(err).__name__}: {err})") from None


def npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header_bytes)`` of the ``.npy`` data at the stream's position.

    Raises:
        ValueError: not a ``.npy`` header (NumPy's message).
    """
    from numpy.lib import format as npy_format

    major, minor = npy_format.read_magic(stream)
    if (major, minor) == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
    return tuple(shape), bool(fortran), dtype, stream.tell()


def stored_member_map(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A read-only memory map of the ``.npy`` zip member ``info`` of the archive ``path``, where it lies.

    Returns None when the member cannot be mapped in place: compressed,
    encrypted, holding Python objects, or with its data at an offset that is
    not a multiple of its item size (see the module docstring).

    Raises:
        ValueError, OSError: the member's headers are unreadable (NumPy's or the OS's message).
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_SIGNATURE:
            raise ValueError(f"no local zip header at byte {info.header_offset}")
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]  # + name + extra field
        raw.seek(start)
        shape, fortran, dtype, end = npy_header(raw)
        size = raw.seek(0, 2)
    if dtype.hasobject or end % max(dtype.alignment, 1):
        return None
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end + nbytes > size or end - start + nbytes != info.file_size:
        raise ValueError(f"member {info.filename!r} is truncated")
    return np.memmap(path, dtype=dtype, mode="r", offset=end, shape=shape, order="F" if fortran else "C")


def float32_blocks(x: np.ndarray, rows: np.ndarray | None) -> Iterator[np.ndarray]:
    """``x[rows]`` (all rows when None) as C-contiguous float32, block by block of :data:`BLOCK_BYTES`.

    uint8 values are divided by 255 (:func:`fitscope.data.scale.pixels_to_unit`);
    any other dtype is cast, exactly as a conversion of the whole array
    would. Rows of a block are read from ``x`` in increasing order (a map
    is read forwards) and put back in the order ``rows`` asks.
    """
    n = len(x) if rows is None else len(rows)
    step = rows_per_block(x, max(x.dtype.itemsize, 4))
    for start in range(0, n, step):
        if rows is None:
            block = x[start:start + step]
        else:
            wanted = rows[start:start + step]
            order = np.argsort(wanted, kind="stable")
            block = x[wanted[order]][np.argsort(order, kind="stable")]
        yield float32_inputs(block)


def float32_inputs(x: np.ndarray) -> np.ndarray:
    """``x`` as C-contiguous float32: uint8 divided by 255, any other dtype cast (no copy if it is already so)."""
    from fitscope.data.scale import pixels_to_unit

    if x.dtype == np.uint8:
        return pixels_to_unit(x)
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(x, dtype=np.float32)


def _npy_header(shape: tuple[int, ...], dtype) -> bytes:
    import io

    from numpy.lib import format as npy_format

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(
        buffer, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def float32_rows(x: np.ndarray, rows: np.ndarray | None, *, stem: str, cache_key: list | None) -> np.ndarray:
    """``x[rows]`` (all rows when None) as C-contiguous float32, copied only where it must be.

    - Nothing to compute (no ``rows``, float32, C order): ``x`` itself, a
      view (read-only when ``x`` is a read-only map).
    - With a ``cache_key`` (the caller's choice: a large source): the cache
      file for the key (written now, block by block through
      :func:`float32_blocks`, if absent), mapped read-only.
    - Otherwise, or if the cache cannot be written: a new array in memory.

    Args:
        x: inputs ``(N, *input_shape)`` in channels-first layout, any numeric dtype (a view of a map is fine).
        rows: int row indices into ``x``, in the order wanted; None for all rows.
        stem: start of the cache file's name (the source's name).
        cache_key: JSON-able parts that name the result (see
            :func:`fitscope.data.cache.cached_array_path`); None: never cache.
    """
    from fitscope.data.cache import cached_array_path, open_cached_array, write_cached_file

    if rows is None and x.dtype == np.float32 and x.flags.c_contiguous:
        return np.asarray(x)
    n = len(x) if rows is None else len(rows)
    shape = (n, *x.shape[1:])
    if cache_key is not None:
        path = cached_array_path(stem, *cache_key)
        cached = open_cached_array(path, shape, np.float32)
        if cached is None:
            try:
                write_cached_file(path, itertools.chain([_npy_header(shape, np.float32)], float32_blocks(x, rows)))
            except OSError:
                path = None
            cached = open_cached_array(path, shape, np.float32) if path is not None else None
        if cached is not None:
            return np.asarray(cached)
    return float32_inputs(x if rows is None else x[rows])


def extracted_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, stem: str,
                     cache_key: list) -> np.ndarray | None:
    """The ``.npy`` zip member ``info``, extracted once into the cache, mapped read-only; None if the cache is
    not writable.

    The member is copied as it is stored (streamed, 1 MiB at a time, CRC
    checked by :mod:`zipfile`), so the cache file is the ``.npy`` file that
    was zipped, at an aligned offset.

    Raises:
        zipfile.BadZipFile, zlib.error, EOFError, ValueError: the member is
            corrupt or truncated, or not a ``.npy`` file.
    """
    from fitscope.data.cache import cached_array_path, open_cached_array, write_cached_file

    path = cached_array_path(stem, *cache_key)
    cached = open_cached_array(path)
    if cached is not None:
        return cached

    def chunks() -> Iterator[bytes]:
        with archive.open(info) as member:
            while chunk := member.read(2**20):
                yield chunk

    try:
        write_cached_file(path, chunks())
    except OSError:
        return None
    cached = open_cached_array(path)
    if cached is None:
        raise ValueError(f"member {info.filename!r} is not a readable .npy array")
    return cached
