import numpy as np
import pytest

from beastflow.io.sed_grid import SEDGridWriter, open_sed_grid, write_sed_grid


def test_roundtrip_and_chunks(tmp_path):
    rng = np.random.default_rng(1)
    seds = rng.random((1000, 3))
    cols = {"Av": rng.random(1000), "logA": rng.random(1000), "fullgrid_idx": np.arange(1000)}
    url = str(tmp_path / "g.hd5")
    write_sed_grid(url, ["F1", "F2", "F3"], np.array([1.0, 2.0, 3.0]), seds, cols, provenance={"stage": "t"})
    g = open_sed_grid(url)
    assert g.filters == ["F1", "F2", "F3"] and g.n_models == 1000
    assert g.provenance == {"stage": "t"}
    blocks = list(g.iter_chunks(300))
    assert [len(b) for b in blocks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate([b.seds for b in blocks]), seds)
    np.testing.assert_array_equal(np.concatenate([b.columns["fullgrid_idx"] for b in blocks]), np.arange(1000))
    assert g.column("fullgrid_idx").dtype == np.int64


def test_incomplete_write_leaves_nothing(tmp_path):
    url = str(tmp_path / "g.hd5")
    with pytest.raises(ValueError, match="wrote 5 rows, expected 10"):
        with SEDGridWriter(url, ["F1"], np.array([1.0]), ["Av"], n_models=10) as w:
            w.append_models(np.ones((5, 1)), {"Av": np.ones(5)})
    assert list(tmp_path.iterdir()) == []


def test_not_a_grid(tmp_path):
    import h5py

    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as h5:
        h5["a"] = [1]
    with pytest.raises(ValueError, match="not a beastflow SED grid"):
        open_sed_grid(str(p))
