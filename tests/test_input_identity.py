"""One rule names every input of a provenance record (issue 13, item 5)."""

from __future__ import annotations

import h5py
import numpy as np
import polars as pl

from beastflow import storage
from beastflow.io.sed_grid import write_sed_grid
from beastflow.provenance import artifact_identity, input_identity, is_beastflow_artifact, make_provenance


def test_artifacts_by_their_own_record_everything_else_by_content(tmp_path):
    grid = write_sed_grid(
        str(tmp_path / "g.hd5"), ["F1"], np.array([1.0]), np.ones((4, 1)), {"Av": np.zeros(4)}, provenance={"x": 1}
    )
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as h5:  # HDF5, but not a beastflow artifact (no format, no record)
        h5["a"] = np.arange(3)
    cat = tmp_path / "cat.parquet"
    pl.DataFrame({"F1_RATE": [1.0, 2.0]}).write_parquet(cat)
    assert is_beastflow_artifact(grid) and not is_beastflow_artifact(str(plain)) and not is_beastflow_artifact(str(cat))
    assert input_identity(grid) == artifact_identity(grid)
    assert input_identity(str(plain)) == storage.content_hash(str(plain))
    assert input_identity(str(cat)) == storage.content_hash(str(cat))
    rec = make_provenance("t", "s", {"sed_grid": grid, "catalog": str(cat)})
    assert rec["input_hashes"]["sed_grid"].startswith("artifact:")
    assert rec["input_hashes"]["catalog"] == storage.content_hash(str(cat))
