"""What every artifact records about how it was made.

A provenance record holds the stage name, the hash of the settings sections the
stage depends on, the content hashes of its input artifacts and the software
versions.  It deliberately holds no time stamp: the same inputs then give the
same bytes, so a stage that reruns but produces an identical artifact does not
invalidate the caches of the stages downstream of it.  It is stored inside the artifact (HDF5 attribute, Parquet metadata)
so that an artifact found on disk can always be traced, and so that caches can
be keyed on exactly the same quantities.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Collection, Mapping
from typing import Any

from beastflow import storage
from beastflow.io.hdf5_arrays import open_h5


def software_versions() -> dict[str, str]:
    return dict(_software_versions())


# read from the package metadata once per process: ~4 ms a call, a noticeable
# part of a small sub-file's fit
@functools.lru_cache(maxsize=1)
def _software_versions() -> tuple[tuple[str, str], ...]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("beastflow", "numpy", "scipy", "astropy", "numba", "h5py", "polars", "pyphot", "dust-extinction"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return tuple(out.items())


def artifact_identity(url: str) -> str:
    """Cheap identity of a (possibly huge) HDF5 artifact for provenance.

    Hashing a grid of 100 GB on every downstream stage would cost a full
    extra read; every beastflow artifact embeds a unique provenance record
    (inputs' hashes, settings hash, creation time), so hash that plus size.
    """
    with open_h5(url) as h5:
        prov = h5.attrs.get("provenance", "")
        n_rows = h5.attrs.get("n_rows", -1)
    prov = prov.decode() if isinstance(prov, bytes) else str(prov)
    return "artifact:" + storage.hash_object([prov, int(n_rows), storage.size(url)])


def make_provenance(
    stage: str,
    settings_hash: str,
    inputs: Mapping[str, str] | None = None,
    input_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    by_identity: Collection[str] = (),
) -> dict[str, Any]:
    """Build the record; input hashes are computed from ``inputs`` unless given, the
    inputs named in ``by_identity`` by ``artifact_identity`` (large HDF5 artifacts)."""
    hashes = dict(input_hashes or {})
    for name, url in (inputs or {}).items():
        if name not in hashes:
            hashes[name] = artifact_identity(url) if name in by_identity else storage.content_hash(url)
    rec = {
        "stage": stage,
        "settings_hash": settings_hash,
        "inputs": dict(inputs or {}),
        "input_hashes": hashes,
        "software": software_versions(),
    }
    if extra:
        rec.update(extra)
    # artifacts of this run are named relative to its output root (relocatable runs)
    return storage.portable(rec)


def dumps(rec: Mapping[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True, default=str)


def loads(text: str | bytes) -> dict[str, Any]:
    return json.loads(text)
