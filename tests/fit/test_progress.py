"""A running fit reports its stars block by block (the progress bars move inside a unit)."""

from __future__ import annotations

from beastflow.fit.fitting import run_fit, stars_progress

from .conftest import settings_for


def test_fit_reports_stars_per_block(field, tmp_path, monkeypatch):
    import beastflow.physics.vega as vega
    from tests.fit import synth

    monkeypatch.setattr(vega, "vega_band_fluxes", lambda filters, positive_points=False: synth.VEGA.copy())
    s = settings_for(tmp_path, star_block=16, lnp_npts=10)
    calls = []
    with stars_progress(lambda done, total: calls.append((done, total))):
        run_fit(s, field["trim"], field["trim_noise"], field["cat0"], None, str(tmp_path / "P_bin0_sub0"))
    assert calls == [(16, 40), (32, 40), (40, 40)]
    # outside the block nothing is reported
    run_fit(s, field["trim"], field["trim_noise"], field["cat0"], None, str(tmp_path / "P_again"))
    assert len(calls) == 3


def test_stage_progress_counts_running_stars(monkeypatch):
    import beastflow.flows.progress as progress

    updates = []

    class Bars:
        def add_task(self, *a, **k):
            return 1

        def update(self, task, **kw):
            updates.append(kw)

    monkeypatch.setattr(progress, "_CONSOLE", Bars())
    p = progress.StageProgress("fit", ["a", "b"], {"a": 100, "b": 50})
    p.stars_done("a", 40)
    assert updates[-1]["completed"] == 40 and updates[-1]["total"] == 150
    p.update("a", "computed", seconds=1.0)
    p.stars_done("b", 50)  # the last block of a unit is always shown
    assert updates[-1]["completed"] == 150 and "150/150 stars" in updates[-1]["note"]
    assert all("stars_done" not in r for r in p.finish())


def test_cli_fit_counts_stars_on_a_terminal(capsys):
    from beastflow.cli.fit import _star_counter
    from beastflow.fit.fitting import STAR_PROGRESS

    with _star_counter("bin0_sub0", enabled=True):
        STAR_PROGRESS.get()(64, 100)
        STAR_PROGRESS.get()(100, 100)
    err = capsys.readouterr().err
    assert "\rfitting bin0_sub0: 64/100 stars" in err and err.endswith("100/100 stars\n")
    with _star_counter("x", enabled=False):
        assert STAR_PROGRESS.get() is None
