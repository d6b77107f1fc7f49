"""Seams through which tests replace what a stage looks up, instead of stage parameters.

The stages take their Vega band fluxes from ``beastflow.physics.vega.vega_band_fluxes``
(looked up at call time); synthetic test fields are made with their own rough
Vega fluxes, so their tests swap that lookup for the duration of a block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import pytest


def patch_vega_fluxes(mp: pytest.MonkeyPatch, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Through ``mp``, every stage sees ``values`` as the Vega band fluxes, whatever the filters."""
    from beastflow.physics import vega

    fixed = np.asarray(values, dtype=np.float64)
    mp.setattr(vega, "vega_band_fluxes", lambda filters, compat=False: fixed.copy())
    return fixed


@contextlib.contextmanager
def fixed_vega_fluxes(values: Sequence[float] | np.ndarray) -> Iterator[np.ndarray]:
    """``patch_vega_fluxes`` for a block (module-scoped fixtures, helpers)."""
    with pytest.MonkeyPatch.context() as mp:
        yield patch_vega_fluxes(mp, values)
