"""The kernel warm-up (issue 14, cold start).  Its own module: the fit tests swap the
Vega lookup for their synthetic field, and the warm-up fits with the real one."""


def test_warmup_fits_both_modes_and_trims(monkeypatch):
    """``python -m beastflow.fit.warmup`` (compile the kernels into the cache before a SLURM
    array) fits its tiny field in default and compat mode without error, and runs the trim
    kernel with the arguments the trim stage gives it (float64 arrays, int32 patterns)."""
    import numpy as np

    from beastflow.fit.warmup import warm_up
    from beastflow.noise import trim

    calls = []

    def spy(*args):
        out = real(*args)
        calls.append(out.dtype)
        return out

    real = trim.trim_patterns
    monkeypatch.setattr(trim, "trim_patterns", spy)
    assert warm_up() > 0
    assert calls == [np.dtype(np.int32)]
