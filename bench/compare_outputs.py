"""Compare the science outputs of two runs: bit for bit, and by how much they differ.

    python bench/compare_outputs.py OLD_OUTPUT NEW_OUTPUT

Reads every ``*_stats.parquet``, ``*_pdf1d.hd5``, ``*_pdf2d.hd5`` and ``*_lnp.hd5``
of OLD_OUTPUT and the same file of NEW_OUTPUT.  Prints, per file, whether each
column/dataset is bit-identical (NaN = NaN) and, where not, the largest
difference: stats columns as a fraction of the column's range, PDFs as a
fraction of the star's peak, everything else in absolute and relative terms.
Exit status 0 when everything is bit-identical, 1 otherwise.  Used to show
that a refactoring changes no number, and to measure a deliberate change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import polars as pl

KINDS = ("_stats.parquet", "_pdf1d.hd5", "_pdf2d.hd5", "_lnp.hd5")


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def difference(name: str, a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape or a.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
        return f"shape/type {a.shape} {a.dtype} -> {b.shape} {b.dtype}"
    a, b = a.astype(np.float64), b.astype(np.float64)
    d = np.abs(a - b)
    if not np.isfinite(d).any():
        return "differs only in non-finite values"
    if name.endswith("/pdf") and a.ndim >= 2:
        peak = np.nanmax(np.abs(a), axis=tuple(range(1, a.ndim)), keepdims=True)
        return f"max |dPDF| / peak = {np.nanmax(d / np.where(peak > 0, peak, 1.0)):.3g}"
    rel = np.nanmax(d / np.maximum(np.abs(a), 1e-300))
    return f"max |d| = {np.nanmax(d):.3g}, relative {rel:.3g}"


def stats_difference(a: np.ndarray, b: np.ndarray) -> str:
    if a.dtype.kind != "f" or a.shape != b.shape:
        return "differs"
    d = np.nanmax(np.abs(a - b))
    span = np.nanmax(a) - np.nanmin(a)
    return f"max |d| = {d:.3g} ({d / span:.3g} of the range)" if span > 0 else f"max |d| = {d:.3g}"


def datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return out


def compare(old: Path, new: Path) -> int:
    names = sorted(p.name for p in old.iterdir() if p.name.endswith(KINDS))
    if not names:
        print(f"{old}: no stats, PDF or lnp files")
        return 1
    bad = 0
    for name in names:
        if not (new / name).exists():
            print(f"{name}: missing from {new}")
            bad += 1
            continue
        if name.endswith(".parquet"):
            ta, tb = pl.read_parquet(old / name), pl.read_parquet(new / name)
            if ta.columns != tb.columns:
                print(f"{name}: columns differ")
                bad += 1
                continue
            pairs = {c: (ta[c].to_numpy(), tb[c].to_numpy()) for c in ta.columns}
        else:
            da, db = datasets(old / name), datasets(new / name)
            if sorted(da) != sorted(db):
                print(f"{name}: datasets differ {sorted(set(da) ^ set(db))}")
                bad += 1
            pairs = {k: (da[k], db[k]) for k in sorted(set(da) & set(db))}
        for key, (a, b) in pairs.items():
            if not identical(np.asarray(a), np.asarray(b)):
                bad += 1
                how = stats_difference(a, b) if name.endswith(".parquet") else difference(key, a, b)
                print(f"{name} {key}: {how}")
    print(f"{len(names)} files compared: " + ("bit-identical" if not bad else f"{bad} arrays differ"))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
