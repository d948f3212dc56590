"""One place that seeds Python, NumPy and torch (nanoGPT-style ``set_seed``), and derives child seeds."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _key_digest(*keys: int | str) -> bytes:
    """The SHA-256 digest (32 bytes) of the whole key tuple, every key in full.

    Each key is encoded as a tag and its text: an integer (Python or NumPy,
    bools included) as ``b"i" + str(int(k))``, anything else as
    ``b"s" + str(k).encode("utf-8")``; each encoding is preceded by its byte
    length as 8 little-endian bytes, so no two different key tuples share an
    encoding (``5`` and ``"5"`` differ, and ``("ab", "c")`` and ``("a", "bc")``
    do too).
    """
    h = hashlib.sha256()
    for k in keys:
        if isinstance(k, (int, np.integer)):
            data = b"i" + str(int(k)).encode("ascii")
        else:
            data = b"s" + str(k).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def derive_seed(seed: int, *keys: int | str) -> int:
    """A reproducible child seed of ``seed`` for the sub-task named by ``keys``: an int in ``[0, 2**32)``.

    Formula: ``SeedSequence(int(seed), spawn_key=words).generate_state(1,
    uint32)[0]``, where ``words`` are the eight little-endian uint32 words of
    the SHA-256 digest of the encoded keys (``_key_digest``: per key a tag,
    ``b"i" + decimal`` for an integer or ``b"s" + UTF-8 text`` otherwise,
    preceded by its byte length as 8 little-endian bytes). The whole of every key enters the digest
    (keys that differ only after their 16th byte give different seeds), and
    NumPy's ``SeedSequence`` makes children independent streams; the same
    ``(seed, keys)`` always gives the same child.
    """
    words = tuple(int(w) for w in np.frombuffer(_key_digest(*keys), dtype="<u4"))
    return int(np.random.SeedSequence(int(seed), spawn_key=words).generate_state(1, dtype=np.uint32)[0])
