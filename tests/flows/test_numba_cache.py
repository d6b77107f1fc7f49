"""Cold start of pools and SLURM arrays (issue 14, item 3): the fit kernels are compiled
once into one numba cache before the tasks start, and every task caches there.

The warm-up itself (a minute and a half of compiling) is replaced by a stand-in that
leaves its stamp; what is checked is who calls it, how often, and what the tasks see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from beastflow import storage
from beastflow.fit import warmup
from beastflow.flows import executors
from beastflow.flows.executors import Unit
from beastflow.settings import Settings, SettingsError, settings_from_dict

from .conftest import with_execution, with_output


def cache_seen(settings, dst: str) -> str:
    """Test-local 'stage': what this process's numba caches into, written to ``dst``."""
    import numba

    seen = f"{os.environ.get('NUMBA_CACHE_DIR')}|{numba.config.CACHE_DIR}"
    storage.write_bytes(dst, seen.encode())
    return dst


@pytest.fixture
def settings(tmp_path):
    s = with_output(Settings(), str(tmp_path / "out"))
    return with_execution(s, retry_delay_s=0.0, retries=0, numba_cache_dir=str(tmp_path / "numba-cache"))


@pytest.fixture
def warm_ups(monkeypatch):
    """Calls of the warm-up, each of which succeeds and leaves its stamp."""
    calls: list[tuple[str, str | None]] = []

    def fake(settings, kind, cache):
        calls.append((kind, cache))
        os.makedirs(cache, exist_ok=True)
        with open(warmup.stamp_path(cache), "w") as f:
            f.write("{}")

    monkeypatch.setattr(executors, "_run_warm_up", fake)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return calls


def _units(settings, stage: str, n: int, tag: str = "") -> tuple[list[Unit], dict[str, str]]:
    units = [
        Unit(stage=stage, label=f"bin{i}_sub0{tag}", func=cache_seen, args=(settings.artifact(f"{stage}{i}{tag}.txt"),))
        for i in range(n)
    ]
    return units, {u.label: u.key(settings) for u in units}


def test_pool_warms_up_once_and_workers_use_the_cache(settings, warm_ups):
    cache = settings.execution.numba_cache_dir
    s = with_execution(settings, workers=2)
    units, keys = _units(s, "fit", 3)
    out = executors.run_batch(s, units, keys, kind="processes")
    assert warm_ups == [("processes", cache)]  # once for the whole pool, before it
    for u in units:
        # the environment for numba imports in the worker, and numba's config for one already made
        assert storage.read_bytes(out[u.label]).decode() == f"{cache}|{cache}"
    # the cache now holds this installation's kernels: no second warm-up
    executors.run_batch(s, *_units(s, "fit", 2, "again"), kind="processes")
    assert len(warm_ups) == 1


def test_trim_units_warm_up_too(settings, warm_ups):
    executors.run_batch(with_execution(settings, workers=1), *_units(settings, "trim", 1), kind="processes")
    assert warm_ups == [("processes", settings.execution.numba_cache_dir)]


def test_no_warm_up_without_fits_or_when_switched_off(settings, warm_ups):
    executors.run_batch(with_execution(settings, workers=1), *_units(settings, "noisemodel", 1), kind="processes")
    off = with_execution(settings, workers=1, warm_up=False)
    executors.run_batch(off, *_units(off, "fit", 1), kind="processes")
    executors.run_batch(settings, *_units(settings, "fit", 1, "here"), kind="inprocess")
    assert warm_ups == []


def test_failed_warm_up_is_logged_and_the_tasks_still_run(settings, monkeypatch, caplog):
    def broken(settings, kind, cache):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(executors, "_run_warm_up", broken)
    s = with_execution(settings, workers=1)
    units, keys = _units(s, "fit", 1)
    out = executors.run_batch(s, units, keys, kind="processes")
    assert storage.exists(out[units[0].label])
    assert "no compiler today" in caplog.text


class _Job:
    def __init__(self, value=None, error: Exception | None = None):
        self.value, self.error, self.job_id = value, error, "42"
        self.paths = types.SimpleNamespace(stderr="/dev/null")

    def done(self) -> bool:
        return True

    def result(self):
        if self.error:
            raise self.error
        return self.value


def test_slurm_warms_up_in_one_job_then_exports_the_cache_to_the_array(settings, monkeypatch, tmp_path):
    """The warm-up is one job with the array's options (compiled for the compute nodes'
    CPU), waited for before the array goes in; both job scripts export the cache folder."""
    import submitit

    events: list[tuple] = []

    class FakeExecutor:
        def __init__(self, folder: str, cluster: str):
            self.params: dict = {}

        def update_parameters(self, **params):
            self.params.update(params)

        def submit(self, fn, *args):
            events.append(("submit", fn, args, self.params))
            cache = args[0]
            os.makedirs(cache, exist_ok=True)
            open(warmup.stamp_path(cache), "w").close()
            return _Job(1.0)

        def map_array(self, fn, *iterables):
            events.append(("array", fn, len(iterables[0]), self.params))
            return [_Job(fn(*args)) for args in zip(*iterables)]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    cache = settings.execution.numba_cache_dir
    s = with_execution(settings, executor="slurm")
    units, keys = _units(s, "fit", 3)
    executors.run_batch(s, units, keys, kind="slurm")
    assert [e[0] for e in events] == ["submit", "array"]
    (_, fn, args, wparams), (_, afn, n, aparams) = events
    assert fn is warmup.warm_up_cache and args == (cache,)
    assert afn is executors.execute_unit and n == 3
    export = [f"export NUMBA_CACHE_DIR={cache}"]
    assert wparams["slurm_setup"] == export and aparams["slurm_setup"] == export
    assert wparams["name"] == "bf-warmup"
    executors.run_batch(s, *_units(s, "fit", 1, "again"), kind="slurm")
    assert [e[0] for e in events] == ["submit", "array", "array"]


def test_stamp_is_per_folder_and_installation(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "warm_up", lambda verbose=False: 0.5)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)  # put back after use_cache_dir sets it
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert not warmup.is_warm(a)
    warmup.warm_up_cache(a)
    assert warmup.is_warm(a) and not warmup.is_warm(b)
    assert os.path.basename(warmup.stamp_path(a)).startswith(f"beastflow-warmup-{warmup.install_key()[:20]}")


def test_cache_dir_applies_after_numba_is_imported(tmp_path):
    """A worker may import numba before its initializer runs: kernels imported later still
    cache in the folder given (here: the HDF5 chunk shuffle, a small cached kernel)."""
    code = (
        "import numba, numpy as np\n"
        "from beastflow.fit.warmup import use_cache_dir\n"
        f"use_cache_dir({str(tmp_path)!r})\n"
        "from beastflow.io.hdf5_arrays import encode_chunk\n"
        "encode_chunk(np.zeros(16))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert [p.name for p in tmp_path.rglob("hdf5_arrays._shuffle8-*.nbi")]


def test_cache_dir_setting_is_a_folder():
    assert settings_from_dict({"execution": {"numba_cache_dir": "~/numba"}}).execution.numba_cache_dir == "~/numba"
    for bad in ("s3://bucket/numba", " "):
        with pytest.raises(SettingsError, match="numba_cache_dir"):
            settings_from_dict({"execution": {"numba_cache_dir": bad}})
    with pytest.raises(SettingsError, match="numba_cachedir"):
        settings_from_dict({"execution": {"numba_cachedir": "/x"}})
