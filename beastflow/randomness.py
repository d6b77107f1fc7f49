"""Random streams keyed by (project seed, stage, unit) — never by data values.

A stream seeded from float content (a hash of fluxes, a count of accepted
draws) changes as soon as one value differs in its last bit, which happens
between CPUs (SIMD exp/log) and thread counts, and then every later draw
changes too.  Here the seed of every stream is the project seed plus two
*labels*: the stage that draws (``"demo.field"``) and the unit of work inside
it (a sub-file name, a density bin, ""), hashed with SHA-256 into the spawn key
of a ``numpy.random.SeedSequence``.  Two streams with different labels are
independent; the same labels give the same numbers on any machine.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _label_words(label: str) -> tuple[int, ...]:
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def seed_sequence(seed: int, stage: str, unit: str = "") -> np.random.SeedSequence:
    """The SeedSequence of (seed, stage, unit); ``seed`` must be a non-negative int."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"a random seed must be a non-negative integer, got {seed!r}")
    if not stage:
        raise ValueError("a random stream needs a stage label")
    return np.random.SeedSequence(int(seed), spawn_key=_label_words(stage) + _label_words(unit))


def stream(seed: int, stage: str, unit: str = "") -> np.random.Generator:
    """A ``numpy.random.Generator`` for one (seed, stage, unit)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, stage, unit)))


__all__ = ["seed_sequence", "stream"]
