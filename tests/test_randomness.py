"""Random streams keyed by (seed, stage, unit) (beastflow.randomness)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.randomness import stream


def test_same_labels_same_numbers_different_labels_independent():
    a = stream(42, "demo.field").random(1000)
    np.testing.assert_array_equal(a, stream(42, "demo.field").random(1000))
    b = stream(42, "demo.observe_asts").random(1000)
    c = stream(42, "demo.field", "bin3").random(1000)
    d = stream(43, "demo.field").random(1000)
    for other in (b, c, d):
        assert not np.array_equal(a, other)
        # independent uniforms: correlation ~ N(0, 1/sqrt(1000)); 5 sigma
        assert abs(np.corrcoef(a, other)[0, 1]) < 5 / np.sqrt(1000)


def test_numbers_are_pinned():
    """The stream is a function of its labels only: these values hold on every machine."""
    # PCG64 and SeedSequence are specified bit for bit by numpy; SHA-256 of the labels too
    assert stream(1, "demo.field").integers(0, 1 << 30, 3).tolist() == [338517305, 1053015469, 150677651]


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7"])
def test_bad_seed_is_an_error(seed):
    with pytest.raises(ValueError, match="seed"):
        stream(seed, "x")
