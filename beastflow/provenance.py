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

import json
import platform
from collections.abc import Mapping
from typing import Any

from beastflow import storage


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("beastflow", "numpy", "scipy", "astropy", "numba", "h5py", "polars", "pyphot", "dust-extinction"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def make_provenance(
    stage: str,
    settings_hash: str,
    inputs: Mapping[str, str] | None = None,
    input_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the record; input hashes are computed from ``inputs`` unless given."""
    hashes = dict(input_hashes or {})
    for name, url in (inputs or {}).items():
        if name not in hashes:
            hashes[name] = storage.content_hash(url)
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
