"""Constants, thresholds and small helpers every part of the comparison shares."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BEASTFLOW_SHARED", REPO.parent / "shared"))
PEER_DIR = SHARED / "peer-beast"
KURUCZ = SHARED / "data" / "stellib" / "kurucz91_solar.grid.fits"

# the acceptance thresholds
TOL_SED = 1e-4
TOL_NOISE = 1e-4
TOL_STATS_RANGE = 0.01
MIN_STARS_FRACTION = 0.99
TOL_PDF_PEAK = 1e-3
TOL_CHI2 = 1e-6
SPEED_GOAL = 50.0
#: rows of the repeated catalog used for the per-star cost at a sub-file size
REPEAT_ROWS = 5000

STAT_SUFFIXES = ("Best", "Exp", "p16", "p50", "p84")
NOT_AVAILABLE = "not available"

log = logging.getLogger("compare_beast")


# ------------------------------------------------------------------ helpers


class Unavailable(RuntimeError):
    """A beastflow stage (or its input) is missing: reported, never faked."""


def timed(fn, *a, **kw) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def process_seconds(code: str) -> float | None:
    """Wall time of a fresh one-core Python process running ``code`` (start-up and imports
    included, as BEAST's per-stage processes are timed); None if it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        log.warning("timing process failed: %s", r.stderr[-2000:])
        return None
    return dt


def fmt(x: Any, spec: str = ".1e") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "NO"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if not np.isfinite(x):
        return str(x)
    return format(float(x), spec)


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells[0])) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
