"""The "Writing your own SED grid or noise model" example of docs/formats.md runs as written."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from tests.conftest import REPO


def _example() -> str:
    text = (REPO / "docs" / "formats.md").read_text()
    m = re.search(r"<!-- example: own-grid -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/formats.md lost its own-grid example"
    return m.group(1)


def test_docs_example_writes_trims_and_fits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes relative file names
    ns: dict = {}
    exec(compile(_example(), "docs/formats.md (own-grid example)", "exec"), ns)  # noqa: S102
    stats = ns["stats"]
    assert stats.height == 5
    # the fits find the stars' own models again: mass to 0.15 dex, A(V) to 0.3 mag (5 % noise)
    truth = ns["truth"]
    m = np.log10(stats["M_ini_p50"].to_numpy()) - np.log10(ns["cols"]["M_ini"][truth])
    a = stats["Av_p50"].to_numpy() - ns["cols"]["Av"][truth]
    assert np.all(np.abs(m) < 0.15) and np.all(np.abs(a) < 0.3), (m, a)
    # both noise models are readable by the stages, row-aligned with the grid
    from beastflow.io.noise_model import open_noise_model

    sp = open_noise_model("own_splinter.hd5")
    assert sp.n_models == 3000 and sp.meta["fractions"]["HST_WFC3_F160W"] == 0.08
    assert pl.read_parquet("own_stars.parquet").columns == ["F475W_RATE", "F814W_RATE", "F160W_RATE"]
