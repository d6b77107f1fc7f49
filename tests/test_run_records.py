"""beastflow.run_records: the one public reader of what a run recorded about itself."""

from __future__ import annotations

from beastflow import run_records, storage
from beastflow.settings import settings_from_dict


def test_the_pipeline_writes_where_the_reader_reads(tmp_path):
    from flows import caching  # no Prefect import

    s = settings_from_dict({"project": {"name": "p", "output": str(tmp_path)}})
    assert caching.record_url(s, "fit", "bin1_sub0") == run_records.record_url(str(tmp_path), "fit", "bin1_sub0")


def test_timings_from_records_and_prelude(tmp_path):
    out = str(tmp_path)
    assert run_records.run_timings(out) == ({}, {})
    for stage, label, secs, created in (
        ("fit", "a", 2.0, "2026-01-01T00:00:02"),
        ("fit", "b", 1.5, "2026-01-01T00:00:03"),
        ("custom", "x", 1.0, "2026-01-01T00:00:00"),
        ("density", "all", 0.5, "2026-01-01T00:00:01"),
    ):
        storage.write_json(
            run_records.record_url(out, stage, label), {"stage": stage, "seconds": secs, "created": created}
        )
    storage.write_bytes(run_records.record_url(out, "fit", "broken"), b"{not json")  # being rewritten: skipped
    secs, units = run_records.stage_timings(out)
    # pipeline order first, then other stages by their first record
    assert list(secs) == ["density", "fit", "custom"] and secs["fit"] == 3.5 and units["fit"] == 2
    run_records.record_prelude(out, {"field": 4.0}, {"field": "3 stars"})
    assert run_records.read_prelude(out).facts == {"field": "3 stars"}
    secs, units = run_records.run_timings(out)
    assert list(secs)[0] == "field" and units["field"] == 1
