"""beastflow.plan: the artifact names of docs/stages.md and the (s, u, g) fan-out."""

from __future__ import annotations

import json

import pytest

from beastflow import plan
from beastflow.settings import settings_from_dict


@pytest.fixture
def names(tmp_path):
    return plan.Names.of(settings_from_dict({"project": {"name": "P", "output": str(tmp_path)}}))


def _base(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def test_names_of_docs_stages(names, tmp_path):
    assert names.sed_grids(1) == [str(tmp_path / "P_seds.grid.hd5")]
    assert [_base(u) for u in names.sed_grids(3)] == [f"P_seds.gridsub{g}.hd5" for g in range(3)]
    assert _base(names.spec_grid()) == "P_spec_w_priors.grid.hd5"
    assert [_base(u) for u in (names.density_map(), names.density_image(), names.catalog_sd())] == [
        "P_sourceden_map.parquet",
        "P_sourceden_map.fits",
        "P_catalog_sd.parquet",
    ]
    assert _base(names.catalog_cut()) == "P_catalog_cut.parquet" and _base(names.asts_cut()) == "P_asts_cut.parquet"
    assert _base(names.cut_region("asts")) == "P_asts_cut.reg"
    assert (
        _base(names.ingested("photometry")) == "P_catalog.parquet" and _base(names.ingested("asts")) == "P_asts.parquet"
    )
    assert _base(names.subfile(3, 1)) == "P_bin3_sub1.parquet" and _base(names.bin_asts(3)) == "P_asts_bin3.parquet"
    assert _base(names.split_manifest()) == "P_split_manifest.json"
    assert _base(names.ast_inputs("_suppl")) == "P_inputAST_suppl.parquet"
    assert _base(names.grid_info()) == "P_grid_info.json" and names.merged_prefix() == str(tmp_path / "P")


def test_noise_trim_and_fit_names(names):
    # noise models always carry gridsub{g} (g = 0 for the one full grid); splinter: no bin
    assert _base(names.noise_model(2, None)) == "P_bin2_gridsub0_noisemodel.hd5"
    assert _base(names.noise_model(2, 1)) == "P_bin2_gridsub1_noisemodel.hd5"
    assert _base(names.noise_model(None, 1)) == "P_gridsub1_noisemodel.hd5"
    # trims and fits carry gridsub{g} only for real subgrids
    assert _base(names.prefix(2, 5, None)) == "P_bin2_sub5"
    prefix = names.prefix(2, 5, 1)
    grid, noise = names.trimmed(prefix)
    assert _base(grid) == "P_bin2_sub5_gridsub1_seds_trim.grid.hd5"
    assert _base(noise) == "P_bin2_sub5_gridsub1_noisemodel_trim.grid.hd5"
    assert _base(plan.trim_index_for(grid)) == "P_bin2_sub5_gridsub1_trim.hd5"
    stats, pdf1d, pdf2d, lnp = plan.fit_outputs(prefix)
    assert [_base(u) for u in (stats, pdf1d, pdf2d, lnp)] == [
        "P_bin2_sub5_gridsub1_stats.parquet",
        "P_bin2_sub5_gridsub1_pdf1d.hd5",
        "P_bin2_sub5_gridsub1_pdf2d.hd5",
        "P_bin2_sub5_gridsub1_lnp.hd5",
    ]
    assert all(plan.fit_prefix_of(u) == prefix for u in (prefix, stats, pdf1d, pdf2d, lnp))


def test_names_read_back(names):
    """The CLI's defaults for files a user names: the parts the pipeline's names carry."""
    for g in (None, 0, 12):
        assert plan.subgrid_in_name(names.sed_grid(g)) == g
        assert plan.subgrid_in_name(names.trimmed(names.prefix(1, 2, g))[0]) == g
        assert plan.tag_in_name(names.prefix(10, 2, g)) == "bin10_sub2"
    assert plan.tag_in_name("/runs/gridsub1/P") is None


def test_names_stay_inside_the_output(tmp_path):
    from beastflow.storage import OutsideOutputError

    with pytest.raises(OutsideOutputError):
        plan.Names(str(tmp_path / "out"), "P").stem_prefix("../elsewhere", None)


def _manifest(tmp_path, asts_bins=(0, 1)) -> str:
    subfiles = [
        {"bin": 0, "sub": 0, "url": "P_bin0_sub0.parquet", "n_rows": 5},
        {"bin": 0, "sub": 1, "url": "P_bin0_sub1.parquet", "n_rows": 0},  # empty: nothing to fit
        {"bin": 1, "sub": 0, "url": str(tmp_path / "P_bin1_sub0.parquet"), "n_rows": 3},
    ]
    asts = [{"bin": b, "url": f"P_asts_bin{b}.parquet", "n_rows": 9} for b in asts_bins]
    url = tmp_path / "P_split_manifest.json"
    url.write_text(json.dumps({"subfiles": subfiles, "asts": asts}))
    return str(url)


def test_read_layout(tmp_path):
    layout = plan.read_layout(_manifest(tmp_path))
    assert [(f.bin, f.sub, f.n_rows) for f in layout.subfiles] == [(0, 0, 5), (1, 0, 3)]
    # relative URLs are relative to the manifest's folder
    assert layout.subfiles[0].url == str(tmp_path / "P_bin0_sub0.parquet")
    assert layout.asts == {0: str(tmp_path / "P_asts_bin0.parquet"), 1: str(tmp_path / "P_asts_bin1.parquet")}
    only = layout.only_bins(["1"])
    assert [f.bin for f in only.subfiles] == [1] and list(only.asts) == [1]
    with pytest.raises(ValueError, match=r"density bins \[1\] hold stars but no artificial-star tests"):
        plan.read_layout(_manifest(tmp_path, asts_bins=(0,)))
    assert len(plan.read_layout(_manifest(tmp_path, asts_bins=()), need_asts=False).subfiles) == 2


def test_fan_out(tmp_path):
    layout = plan.read_layout(_manifest(tmp_path))
    assert plan.subgrids(1) == [None] and plan.subgrids(3) == [0, 1, 2]
    # noise models: per (bin, subgrid), bins in order; splinter: one per subgrid
    cells = plan.noise_cells({1: "a1", 0: "a0"}, [0, 1])
    assert [(c.label, c.ast_url) for c in cells] == [
        ("bin0_gridsub0", "a0"),
        ("bin0_gridsub1", "a0"),
        ("bin1_gridsub0", "a1"),
        ("bin1_gridsub1", "a1"),
    ]
    assert [c.label for c in plan.noise_cells({None: None}, [None])] == ["grid"]
    assert plan.noise_label(None, 2) == "gridsub2" and plan.noise_label(3, None) == "bin3_grid"
    # trims and fits: per (sub-file, subgrid), subgrid-major
    fan = plan.cells(layout, [0, 1])
    assert [(c.label, c.tag, c.subgrid) for c in fan] == [
        ("bin0_sub0_gridsub0", "bin0_sub0", 0),
        ("bin1_sub0_gridsub0", "bin1_sub0", 0),
        ("bin0_sub0_gridsub1", "bin0_sub0", 1),
        ("bin1_sub0_gridsub1", "bin1_sub0", 1),
    ]
    assert [c.label for c in plan.cells(layout, [None])] == ["bin0_sub0_grid", "bin1_sub0_grid"]
    labels = ["bin10_sub0_gridsub0", "bin9_sub0_gridsub1", "bin9_sub0_gridsub0"]
    assert sorted(labels, key=plan.fan_order) == ["bin9_sub0_gridsub0", "bin9_sub0_gridsub1", "bin10_sub0_gridsub0"]
