"""Star-level progress of a stage (issue 18 item 3): units finished plus stars done inside running units."""

from beastflow.flows import progress as P
from beastflow.flows.progress import StageProgress


def test_running_units_count_their_finished_stars(monkeypatch):
    monkeypatch.setattr(P, "PARTIAL_EVERY_S", 0.0)
    p = StageProgress("fit", ["a", "b", "c"], {"a": 100, "b": 50, "c": 50})
    assert p.snapshot() == (0.0, 0, "0/200 stars")
    p.stars_done("a", 64)
    assert p.snapshot() == (64 / 200, 0, "64/200 stars")
    p.update("b", "cached", attempt=0)
    p.stars_done("a", 100)
    assert p.snapshot() == (150 / 200, 1, "150/200 stars")
    p.update("a", "computed")  # its own count is now the unit's stars, not counted twice
    assert p.snapshot() == (150 / 200, 2, "150/200 stars")
    p.stars_done("c", 10)
    p.update("c", "retrying")  # a retried unit starts again from 0
    assert p.snapshot() == (150 / 200, 2, "150/200 stars")


def test_stage_without_stars_counts_units():
    p = StageProgress("trim", ["a", "b"])
    p.stars_done("a", 5)  # ignored: the stage does not count stars
    p.update("a", "computed")
    assert p.snapshot() == (0.5, 1, "")
