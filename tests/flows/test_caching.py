"""Cache keys, records and per-unit retries (fast: no Prefect, no stages).

The stage-like functions here are test-local and only write a file; the
whole-pipeline behaviour on the real stages is in test_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from beastflow import storage
from beastflow.flows import caching, executors, result_codec
from beastflow.flows.executors import Unit, UnitsFailed
from beastflow.settings import Settings

from .conftest import with_execution, with_output


@result_codec.register_result_type
@dataclasses.dataclass
class Out:
    path: str
    n: int
    parts: list


def copy_upper(settings, src: str, dst: str) -> Out:
    """Test-local 'stage': upper-cases a file."""
    storage.write_bytes(dst, storage.read_bytes(src).upper())
    return Out(dst, 1, [dst])


FLAKY_CALLS: dict[str, int] = {}


def flaky(settings, dst: str, fail_times: int) -> str:
    """Fails its first ``fail_times`` calls (per destination), then writes ``dst``."""
    FLAKY_CALLS[dst] = FLAKY_CALLS.get(dst, 0) + 1
    if FLAKY_CALLS[dst] <= fail_times:
        raise OSError(f"transient failure {FLAKY_CALLS[dst]} for {os.path.basename(dst)}")
    storage.write_bytes(dst, b"ok")
    return dst


@pytest.fixture
def settings(tmp_path):
    return with_execution(with_output(Settings(), str(tmp_path / "out")), retry_delay_s=0.0, retries=2)


def _unit(settings, src, label="u0"):
    return Unit(
        stage="copy",
        label=label,
        func=copy_upper,
        args=(src, settings.artifact(f"{label}.txt")),
        inputs={"src": src},
        sections=("physics",),
    )


def test_key_follows_content_not_mtime(settings, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    k1 = _unit(settings, str(src)).key(settings)
    time.sleep(0.01)
    os.utime(src)  # touched, same bytes
    assert _unit(settings, str(src)).key(settings) == k1
    src.write_text("abd")
    assert _unit(settings, str(src)).key(settings) != k1


def test_key_ignores_output_location_and_execution(settings, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    u = _unit(settings, str(src))
    moved = with_execution(with_output(settings, str(tmp_path / "elsewhere")), executor="slurm", retries=7)
    assert u.key(settings) == u.key(moved)
    physics = settings.physics.model_copy(update={"velocity": 0.0})
    assert u.key(settings) != u.key(settings.model_copy(update={"physics": physics}))


def test_record_hit_miss_and_deleted_output(settings, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    u = _unit(settings, str(src))
    key = u.key(settings)
    assert caching.read_hit(settings, "copy", "u0", key) is None
    executors.execute_unit(settings, u, key)
    hit = caching.read_hit(settings, "copy", "u0", key)
    assert hit == Out(settings.artifact("u0.txt"), 1, [settings.artifact("u0.txt")])
    assert caching.read_hit(settings, "copy", "u0", "other-key") is None
    os.remove(settings.artifact("u0.txt"))
    assert caching.read_hit(settings, "copy", "u0", key) is None  # output gone: recompute


def test_batch_retries_only_the_failed_unit(settings):
    FLAKY_CALLS.clear()
    units = [
        Unit(stage="flaky", label=f"bin0_sub{i}", func=flaky, args=(settings.artifact(f"f{i}.txt"), 1 if i == 1 else 0))
        for i in range(3)
    ]
    keys = {u.label: u.key(settings) for u in units}
    events = []
    out = executors.run_batch(
        settings,
        units,
        keys,
        kind="inprocess",
        on_event=lambda u, st, info: events.append((u.label, st, info["attempt"])),
    )
    assert set(out) == {"bin0_sub0", "bin0_sub1", "bin0_sub2"}
    assert FLAKY_CALLS == {
        settings.artifact("f0.txt"): 1,
        settings.artifact("f1.txt"): 2,
        settings.artifact("f2.txt"): 1,
    }
    assert ("bin0_sub1", "failed", 1) in events and ("bin0_sub1", "done", 2) in events


def test_batch_reports_failed_subfiles_and_why(settings):
    FLAKY_CALLS.clear()
    units = [
        Unit(stage="fit", label=f"bin{i}_sub0", func=flaky, args=(settings.artifact(f"g{i}.txt"), 9 * i))
        for i in range(2)
    ]
    keys = {u.label: u.key(settings) for u in units}
    with pytest.raises(UnitsFailed) as err:
        executors.run_batch(settings, units, keys, kind="inprocess")
    assert err.value.failures.keys() == {"bin1_sub0"}
    assert "transient failure 3" in str(err.value) and "1 of 2 units" in str(err.value)
    assert storage.exists(settings.artifact("g0.txt"))  # the good unit is kept (and cached)


def test_process_pool_executor(settings, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    units = [_unit(settings, str(src), f"u{i}") for i in range(2)]
    keys = {u.label: u.key(settings) for u in units}
    out = executors.run_batch(with_execution(settings, workers=2), units, keys, kind="processes")
    assert out["u1"].path == settings.artifact("u1.txt")
    assert storage.read_bytes(settings.artifact("u1.txt")) == b"ABC"
    # the workers wrote the records: this process sees hits
    assert caching.read_hit(settings, "copy", "u0", keys["u0"]) is not None


def test_memory_request_from_grid_size(settings):
    sl = settings.execution.slurm.model_copy(update={"mem_overhead_gb": 1.0, "mem_factor": 3.0, "mem_max_gb": 8.0})
    s = settings.model_copy(update={"execution": settings.execution.model_copy(update={"slurm": sl})})
    assert executors.mem_request_gb(s, 0) == 1
    assert executors.mem_request_gb(s, 2**30) == 4  # 1 + 3 x 1 GiB
    assert executors.mem_request_gb(s, 2**29 + 1) == 3  # 2.5.. -> rounded up
    with pytest.raises(ValueError, match="mem_max_gb"):
        executors.mem_request_gb(s, 3 * 2**30)


# ----------------------------------------------------------------------------------------------
# a record is plain data: it never chooses code (issue 12, item 1)
# ----------------------------------------------------------------------------------------------
def _ran_unit(settings, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    u = _unit(settings, str(src))
    key = u.key(settings)
    executors.execute_unit(settings, u, key)
    return u, key


@pytest.mark.parametrize(
    "payload",
    [
        # what the record format before issue 12 decoded by importing the named callable
        lambda marker: {"__dataclass__": "os:mkdir", "fields": {"path": marker}},
        lambda marker: {"type": "os:mkdir", "fields": {"path": marker}},
        lambda marker: {"type": "mkdir", "fields": {"path": marker}},
    ],
)
def test_record_naming_a_callable_is_a_miss_and_runs_nothing(settings, tmp_path, payload):
    u, key = _ran_unit(settings, tmp_path)
    url = caching.record_url(settings, "copy", "u0")
    rec = storage.read_json(url)
    marker = str(tmp_path / "PWNED")
    rec["result"] = payload(marker)
    storage.write_json(url, rec)
    found = caching.lookup(settings, "copy", "u0", key)
    assert not found.hit and found.rejected and "invalid" in found.reason
    assert not os.path.exists(marker)  # nothing named in the record was called


def test_record_with_unknown_field_or_foreign_artifact_path_is_a_miss(settings, tmp_path):
    u, key = _ran_unit(settings, tmp_path)
    url = caching.record_url(settings, "copy", "u0")
    good = storage.read_json(url)
    assert good["result"]["type"] == "Out"  # a short allow-listed name, no module path
    rec = dict(good, result={"type": "Out", "fields": {**good["result"]["fields"], "evil": 1}})
    storage.write_json(url, rec)
    assert not caching.lookup(settings, "copy", "u0", key).hit
    fields = dict(good["result"]["fields"], path={"artifact": "../../etc/passwd"})
    storage.write_json(url, dict(good, result={"type": "Out", "fields": fields}))
    found = caching.lookup(settings, "copy", "u0", key)
    assert not found.hit and "leaves the output root" in found.reason
    storage.write_json(url, good)
    assert caching.lookup(settings, "copy", "u0", key).hit


def test_unregistered_result_type_cannot_be_recorded(settings):
    @dataclasses.dataclass
    class Stranger:
        x: int

    with pytest.raises(TypeError, match="not an allowed stage result type"):
        result_codec.encode(Stranger(1))


# ----------------------------------------------------------------------------------------------
# a hit verifies what it hands out (issue 12, item 4)
# ----------------------------------------------------------------------------------------------
def test_overwritten_output_of_same_size_is_a_miss(settings, tmp_path):
    u, key = _ran_unit(settings, tmp_path)
    out = settings.artifact("u0.txt")
    with open(out, "r+b") as fh:  # corrupt in place, same size
        fh.write(b"X")
    st = os.stat(out)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    found = caching.lookup(settings, "copy", "u0", key)
    assert not found.hit and found.rejected and "changed content" in found.reason


def test_truncated_output_is_a_miss_and_a_rerun_repairs_it(settings, tmp_path):
    u, key = _ran_unit(settings, tmp_path)
    out = settings.artifact("u0.txt")
    with open(out, "r+b") as fh:
        fh.truncate(1)
    found = caching.lookup(settings, "copy", "u0", key)
    assert not found.hit and "changed size" in found.reason
    executors.execute_unit(settings, u, key)
    assert caching.lookup(settings, "copy", "u0", key).hit
    assert storage.read_bytes(out) == b"ABC"


def test_touched_but_identical_output_is_rehashed_once_and_still_a_hit(settings, tmp_path):
    u, key = _ran_unit(settings, tmp_path)
    out = settings.artifact("u0.txt")
    st = os.stat(out)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert caching.lookup(settings, "copy", "u0", key).hit
    rec = storage.read_json(caching.record_url(settings, "copy", "u0"))
    assert rec["outputs"]["u0.txt"]["stamp"] == caching.fingerprint(out)[1]  # refreshed: fast path next time


# ----------------------------------------------------------------------------------------------
# records are relative to the output root (issue 12, item 5)
# ----------------------------------------------------------------------------------------------
def test_copied_run_folder_hands_out_its_own_files(settings, tmp_path):
    import shutil

    u, key = _ran_unit(settings, tmp_path)
    copy_root = str(tmp_path / "copy")
    shutil.copytree(settings.output, copy_root)
    moved = with_output(settings, copy_root)
    shutil.rmtree(settings.output)  # the original is gone: nothing may still point there
    hit = caching.read_hit(moved, "copy", "u0", key)
    assert hit == Out(moved.artifact("u0.txt"), 1, [moved.artifact("u0.txt")])
    raw = storage.read_bytes(caching.record_url(moved, "copy", "u0")).decode()
    assert str(tmp_path / "out") not in raw


def test_output_concurrency_limit_name_is_stable(tmp_path):
    from beastflow.flows.output_limit import limit_name

    a = limit_name(str(tmp_path / "out"))
    assert a == limit_name(str(tmp_path / "x" / ".." / "out") + "/") and a.startswith("beastflow-output-")
    assert a != limit_name(str(tmp_path / "other")) and a != limit_name("s3://bucket" + str(tmp_path / "out"))
