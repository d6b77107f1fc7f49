"""What every artifact records about how it was made.

A provenance record holds the stage name, the hash of the settings sections the
stage depends on, the identities of its inputs and the software versions.

One rule names every input (``input_identity``): an HDF5 artifact written by
beastflow (a grid, a noise model, a trim index...) by its own embedded
provenance record plus its size -- a 100 GB grid is not re-read by every
downstream stage --, and any other file (a catalog, ASTs, a library file, a
JSON) by the SHA-256 of its bytes.  Cache keys (``beastflow.flows.caching``)
are a different thing: they verify, so they always hash content.  It deliberately holds no time stamp: the same inputs then give the
same bytes, so a stage that reruns but produces an identical artifact does not
invalidate the caches of the stages downstream of it.  It is stored inside the artifact (HDF5 attribute, Parquet metadata)
so that an artifact found on disk can always be traced, and so that caches can
be keyed on exactly the same quantities.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Mapping
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


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _embedded_record(url: str) -> tuple[str, int] | None:
    """(provenance record, n_rows) of an HDF5 file written by beastflow (its ``format``
    attribute names a beastflow format and it holds a record); None for any other file."""
    with storage.open_url(url, "rb") as fh:
        if fh.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            return None
    with open_h5(url) as h5:
        fmt = h5.attrs.get("format", "")
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if not fmt.startswith("beastflow-") or "provenance" not in h5.attrs:
            return None
        prov = h5.attrs["provenance"]
        n_rows = int(h5.attrs.get("n_rows", -1))
    return (prov.decode() if isinstance(prov, bytes) else str(prov)), n_rows


def _identity(url: str, record: tuple[str, int]) -> str:
    return "artifact:" + storage.hash_object([record[0], record[1], storage.size(url)])


def artifact_identity(url: str) -> str:
    """Cheap identity of a (possibly huge) HDF5 artifact for provenance.

    Hashing a grid of 100 GB on every downstream stage would cost a full
    extra read; every beastflow artifact embeds a unique provenance record
    (its own inputs' identities, settings hash, software), so hash that plus size.
    """
    with open_h5(url) as h5:
        prov = h5.attrs.get("provenance", "")
        n_rows = int(h5.attrs.get("n_rows", -1))
    return _identity(url, (prov.decode() if isinstance(prov, bytes) else str(prov), n_rows))


def is_beastflow_artifact(url: str) -> bool:
    """An HDF5 file whose ``format`` attribute names a beastflow format and which
    carries a provenance record (what ``artifact_identity`` hashes)."""
    return _embedded_record(url) is not None


def input_identity(url: str) -> str:
    """How a provenance record names one input (the module docstring's one rule)."""
    record = _embedded_record(url)  # one read of the header, not two
    return _identity(url, record) if record is not None else storage.content_hash(url)


def make_provenance(
    stage: str,
    settings_hash: str,
    inputs: Mapping[str, str] | None = None,
    input_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the record; every input is named by ``input_identity`` (``input_hashes``:
    identities a caller already computed that way, e.g. once for a batch of sub-files)."""
    hashes = dict(input_hashes or {})
    for name, url in (inputs or {}).items():
        if name not in hashes:
            hashes[name] = input_identity(url)
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
