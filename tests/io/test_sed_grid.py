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


def test_log_flux_columns_are_derived_from_seds_not_stored(tmp_path):
    """log{F}_wd = log10(seds[:, F]) by definition: not stored, read back bit for bit
    (through the grid reader and through a trim index), and a column that is not
    that log10 is refused instead of being silently replaced."""
    import h5py

    from beastflow.io.trim_index import KeptGrid, TrimIndex

    rng = np.random.default_rng(2)
    seds = 10 ** rng.uniform(-20, -15, (500, 2))
    seds[3, 1] = 0.0  # log10 -> -inf, as the physics stage writes it
    filters = ["HST_WFC3_F275W", "HST_ACS_WFC_F814W"]
    with np.errstate(divide="ignore"):
        logs = {f"log{f}_wd": np.log10(seds[:, k]) for k, f in enumerate(filters)}
    cols = {"Av": rng.random(500), **logs, f"log{filters[0]}_nd": rng.random(500)}
    url = str(tmp_path / "g.hd5")
    write_sed_grid(url, filters, np.array([2700.0, 8100.0]), seds, cols)
    with h5py.File(url) as h5:
        assert sorted(h5["grid"]) == ["Av", f"log{filters[0]}_nd"]
    g = open_sed_grid(url)
    assert g.columns == list(cols)
    rows = np.array([1, 3, 7, 400])
    got = g.read(rows=rows, columns=list(logs), seds=False)
    for c, v in logs.items():
        np.testing.assert_array_equal(got.columns[c], v[rows])
        np.testing.assert_array_equal(np.concatenate([b.columns[c] for b in g.iter_chunks(128, [c], False)]), v)
    index = TrimIndex(url, rows, 500, 500, url, "", [], {}, {})
    kept = KeptGrid(g, index).read(columns=list(cols))
    for c, v in cols.items():
        np.testing.assert_array_equal(kept.columns[c], v[rows])
    bad = {**cols, f"log{filters[1]}_wd": logs[f"log{filters[1]}_wd"] + 1e-12}
    with pytest.raises(ValueError, match=f"log{filters[1]}_wd is not log10"):
        write_sed_grid(str(tmp_path / "bad.hd5"), filters, np.array([2700.0, 8100.0]), seds, bad)
