"""A restricted unpickler for data files that come as Python pickles (CIFAR).

A pickle can name any importable callable and have it called while loading,
so ``pickle.load`` on a file from elsewhere runs whatever the file says.
:func:`load_restricted_pickle` resolves only the globals needed to rebuild
plain containers, bytes, numbers and NumPy arrays:

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` (arrays, pickle protocols 0-4);
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``
  (arrays, protocol 5) and ``numpy[._]core.multiarray.scalar`` (NumPy scalars);
- ``_codecs.encode`` (how Python 3 writes ``bytes`` at protocols 0-2);
- the builtin container and number types (``dict``, ``list``, ``tuple``,
  ``set``, ``frozenset``, ``bytes``, ``bytearray``, ``str``, ``int``,
  ``float``, ``complex``, ``bool``).

Any other global raises :class:`~fitscope.errors.DataError` before anything
is called, so a malicious file executes nothing.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from fitscope.errors import DataError

ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
    | {("builtins", name) for name in (
        "dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "complex", "bool",
    )}
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def __init__(self, file, *, where: str, **kwargs):
        super().__init__(file, **kwargs)
        self.where = where

    def find_class(self, module: str, name: str):
        """Resolve ``module.name`` if allowed, else raise :class:`DataError` (nothing is imported)."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self.where}: only plain containers, "
                f"bytes, numbers and numpy arrays are allowed"
            )
        return super().find_class(module, name)


def load_restricted_pickle(path: Path):
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"``, as CIFAR needs).

    Raises:
        DataError: a disallowed global, or an unreadable/truncated file.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path.name}: {err.strerror or err}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), where=path.name, encoding="bytes").load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, UnicodeDecodeError, OverflowError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise DataError(
            f"cannot read {path.name}: expected a Python pickle, unreadable or truncated ({detail})"
        ) from None
