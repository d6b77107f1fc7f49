"""Stage results <-> plain JSON data, decoded only into an allow-list of types.

A cache record lives in the output folder (local disk, shared scratch, an S3
prefix), so anyone who can write there controls its bytes.  Decoding must
therefore never let the record pick what code runs: a record names a result
type by a short name (``"FitResult"``) that is looked up in ``RESULT_TYPES``,
a table built from this module's own imports; an unknown name, an unknown
field or a value that is not plain data makes the record invalid (the caller
treats it as a cache miss).  Nothing is imported or called by a name found in
the data.

Artifact URLs below the run's output root are stored *relative* to it
(``{"artifact": "P_bin1_sub0_stats.parquet"}``) and resolved against the
output root of the run that reads the record, so a run folder copied or moved
(local -> local, local -> S3) hands out its own files, never the original's.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from typing import Any

from beastflow import storage


class InvalidRecord(ValueError):
    """A cache record that is not plain data of an allowed result type."""


_RESULT_TYPES: dict[str, type] = {}


def register_result_type(cls: type) -> type:
    """Allow ``cls`` (a dataclass) in cache records; for stage results defined outside beastflow (tests)."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = _RESULT_TYPES.get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(f"result type name {cls.__name__!r} is already taken by {known.__module__}")
    _RESULT_TYPES[cls.__name__] = cls
    return cls


def result_types() -> dict[str, type]:
    """The allow-list: every stage's result type (imported here, by code, not by data)."""
    if not any(getattr(c, "__module__", "").startswith("beastflow.") for c in _RESULT_TYPES.values()):
        from beastflow.fit.fitting import FitResult
        from beastflow.fit.grid_info import GridInfoResult
        from beastflow.fit.merge import MergeResult
        from beastflow.noise.trim import TrimJob, TrimResult
        from beastflow.observations.ast_inputs import ASTInputsResult
        from beastflow.observations.cuts import CutResult
        from beastflow.observations.density import DensityMapResult
        from beastflow.observations.split import SplitResult
        from beastflow.physics.physicsmodel import PhysicsModelResult
        from beastflow.transfer.base import TransferReport

        for cls in (
            PhysicsModelResult,
            DensityMapResult,
            CutResult,
            SplitResult,
            ASTInputsResult,
            TrimJob,
            TrimResult,
            GridInfoResult,
            FitResult,
            MergeResult,
            TransferReport,
        ):
            register_result_type(cls)
    return _RESULT_TYPES


# --------------------------------------------------------------------------
# paths relative to the output root
# --------------------------------------------------------------------------
def _root_prefix(root: str | None) -> str | None:
    return None if not root else root.rstrip("/") + "/"


def relative_to_root(url: str, root: str) -> str | None:
    """``url`` relative to the output root, or None when it is not below it."""
    prefix = _root_prefix(root)
    if prefix and url.startswith(prefix):
        rel = posixpath.normpath(url[len(prefix) :])
        if rel not in (".", "") and not rel.startswith("../") and rel != "..":
            return rel
    return None


def below_root(rel: str, root: str) -> str:
    """Resolve a recorded relative path; refuses anything that would leave the root."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "://" in rel or "\\" in rel:
        raise InvalidRecord(f"artifact path {rel!r} is not a relative path")
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise InvalidRecord(f"artifact path {rel!r} leaves the output root")
    return storage.join(root, norm)


# --------------------------------------------------------------------------
# encode / decode
# --------------------------------------------------------------------------
_SCALARS = (str, int, float, bool, type(None))


def encode(result: Any, root: str | None = None) -> Any:
    """A stage's returned value (dataclasses of URLs, lists, dicts, scalars) as JSON data.

    Dataclasses become ``{"type": "FitResult", "fields": {...}}`` (the type must
    be in the allow-list, so that the record can be read back); strings naming
    artifacts below ``root`` become ``{"artifact": relative path}``.  Every other
    dict is stored as ``{"dict": {...}}`` so that no data key can pose as a tag.
    """
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        name = type(result).__name__
        if result_types().get(name) is not type(result):
            raise TypeError(
                f"{type(result).__module__}.{name} is not an allowed stage result type "
                "(beastflow.flows.result_codec.register_result_type)"
            )
        return {
            "type": name,
            "fields": {f.name: encode(getattr(result, f.name), root) for f in dataclasses.fields(result)},
        }
    if isinstance(result, Mapping):
        return {"dict": {str(k): encode(v, root) for k, v in result.items()}}
    if isinstance(result, (list, tuple)):
        return [encode(v, root) for v in result]
    if hasattr(result, "tolist"):  # numpy scalar / array
        return encode(result.tolist(), root)
    if isinstance(result, str) and root:
        rel = relative_to_root(result, root)
        if rel is not None:
            return {"artifact": rel}
    if not isinstance(result, _SCALARS):
        raise TypeError(f"cannot store a {type(result).__name__} in a cache record")
    return result


def decode(data: Any, root: str | None = None) -> Any:
    """Rebuild a stage result from ``encode``'s data; raises ``InvalidRecord`` on anything else."""
    if isinstance(data, list):
        return [decode(v, root) for v in data]
    if isinstance(data, _SCALARS):
        return data
    if not isinstance(data, Mapping):
        raise InvalidRecord(f"unexpected {type(data).__name__} in a cache record")
    keys = set(data)
    if keys == {"artifact"}:
        if not root:
            raise InvalidRecord("a relative artifact path needs the output root")
        return below_root(data["artifact"], root)
    if keys == {"dict"} and isinstance(data["dict"], Mapping):
        return {str(k): decode(v, root) for k, v in data["dict"].items()}
    if keys == {"type", "fields"} and isinstance(data["fields"], Mapping):
        cls = result_types().get(data["type"]) if isinstance(data["type"], str) else None
        if cls is None:
            raise InvalidRecord(f"result type {data['type']!r} is not an allowed stage result type")
        allowed = {f.name for f in dataclasses.fields(cls) if f.init}
        extra = set(data["fields"]) - allowed
        if extra:
            raise InvalidRecord(f"{cls.__name__} has no field(s) {sorted(extra)}")
        try:
            return cls(**{k: decode(v, root) for k, v in data["fields"].items()})
        except TypeError as exc:  # a required field is missing
            raise InvalidRecord(f"{cls.__name__}: {exc}") from None
    raise InvalidRecord(f"unexpected object with keys {sorted(keys)[:5]} in a cache record")
