"""A run's artifacts below its output URL, found by the names of docs/stages.md, and the
small readers every report page shares (the run's report, one star's page, the field plots)."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Sequence

import numpy as np

from beastflow import storage

REPORT_DIR = "report"


@dataclasses.dataclass
class Artifacts:
    """What was found below an output URL (None / empty = absent)."""

    output: str
    project: str
    stats: str | None = None
    pdf1d: str | None = None
    catalog: str | None = None
    density_map: str | None = None
    asts: str | None = None
    asts_per_bin: dict[int, str] = dataclasses.field(default_factory=dict)
    noise_models: list[str] = dataclasses.field(default_factory=list)
    sed_grids: list[str] = dataclasses.field(default_factory=list)
    truth: str | None = None


def _names(urls: Sequence[str]) -> dict[str, str]:
    return {posixpath.basename(u.rstrip("/")): u for u in urls}


def find_artifacts(output_url: str, project: str | None = None, truth_url: str | None = None) -> Artifacts:
    """Locate a run's artifacts by the names of docs/stages.md."""
    if not storage.exists(output_url):
        raise FileNotFoundError(f"{output_url}: no such output folder")
    files = _names(storage.listdir(output_url))
    if project is None:
        cands = sorted(
            n[: -len("_stats.parquet")]
            for n in files
            if n.endswith("_stats.parquet") and not re.search(r"_bin\d+_sub\d+", n)
        )
        if not cands:
            raise FileNotFoundError(
                f"{output_url}: no merged stats file (P_stats.parquet); has the pipeline run to the end (merge stage)?"
            )
        project = cands[0]
    P = project
    a = Artifacts(output=output_url, project=P)
    a.stats = files.get(f"{P}_stats.parquet")
    a.pdf1d = files.get(f"{P}_pdf1d.hd5")
    a.catalog = files.get(f"{P}_catalog_sd.parquet") or files.get(f"{P}_catalog_cut.parquet")
    a.density_map = files.get(f"{P}_sourceden_map.parquet")
    a.asts = files.get(f"{P}_asts_cut.parquet") or files.get(f"{P}_asts.parquet")
    for n, u in files.items():
        m = re.fullmatch(re.escape(P) + r"_asts_bin(\d+)\.parquet", n)
        if m:
            a.asts_per_bin[int(m.group(1))] = u
        if re.fullmatch(re.escape(P) + r"_bin\d+(_gridsub\d+)?_noisemodel\.hd5", n):
            a.noise_models.append(u)
        if re.fullmatch(re.escape(P) + r"_seds\.grid(sub\d+)?\.hd5", n):
            a.sed_grids.append(u)
    a.noise_models.sort()
    a.sed_grids.sort()
    a.truth = truth_url or files.get(f"{P}_truth.parquet")
    return a


def read_table(url: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    with storage.open_url(url, "rb") as fh:
        tab = pq.read_table(fh)
    out = {}
    for c in tab.column_names:
        col = tab.column(c)
        try:
            out[c] = col.to_numpy()
        except Exception:  # nested / string columns that are not needed here
            out[c] = np.asarray(col.to_pylist(), dtype=object)
    return out


def stats_filters(stats: dict[str, np.ndarray]) -> list[str]:
    """Full filter names: the stats columns that have a matching ``symlog{F}_wd_bias_p50``."""
    return [c for c in stats if f"symlog{c}_wd_bias_p50" in stats]


def wavelengths(art: Artifacts, filters: Sequence[str]) -> np.ndarray:
    from beastflow.io.sed_grid import SEDGrid

    for u in art.sed_grids:
        g = SEDGrid(u)
        if list(g.filters) == list(filters):
            return np.asarray(g.lamb)
    # no grid in the output folder: filter pivot wavelengths from the filter library
    from beastflow.physics import photometry

    return np.array([f.mean_wavelength for f in photometry.load_filters(filters)])
