"""Content-addressed cache records for pipeline units (no Prefect import).

A *unit* is one call of a stage function (``run_fit`` for bin 1, sub-file 0,
subgrid 2, ...).  Its cache key is the hash of

* the beastflow version, the stage name and the unit label,
* the hash of the settings sections the stage depends on
  (``Settings.section_hash``; ``[project]`` contributes only ``name`` and
  ``seed``, never the output location or credentials),
* the SHA-256 content hashes of every input artifact
  (``beastflow.storage.content_hash``), not their URLs or modification times.

A unit's other arguments (output names, subgrid index, tag) follow from its
label and the project name, so they need no place of their own in the key.

After a unit ran, a small JSON record ``{output}/.cache/{stage}/{label}.json``
stores the key and the stage's returned output URLs.  A later run is a cache
hit when the record's key equals the freshly computed key *and* every output
URL in it still exists.  The records live next to the artifacts, so the cache
works the same on local disk, shared scratch and S3, needs no Prefect server
and travels with the outputs.  Because keys are built from content hashes, a
changed catalog row changes the hash of the catalog, hence the keys of the
stages that read it, and — only where their outputs' bytes change — the keys
of the stages further downstream.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from beastflow import storage

#: bump when the key recipe changes, so that old records are never trusted
CACHE_FORMAT = 1


# --------------------------------------------------------------------------
# content hashes with a fingerprint memo
# --------------------------------------------------------------------------
# Hashing a multi-GB SED grid on every run would defeat the cache, so hashes
# are memoised per (URL, size, modification stamp).  The memo is filled when a
# unit writes its outputs and when a cache record is read back, so a second
# run of the pipeline (even in a new process) re-reads only the files whose
# size or modification stamp changed.
_HASH_MEMO: dict[str, tuple[tuple[Any, ...], str]] = {}
_MEMO_LOCK = threading.Lock()


def fingerprint(url: str) -> tuple[Any, ...]:
    """Cheap identity of a file version: size plus mtime / ETag / LastModified."""
    fs, path = storage.filesystem(url)
    info = fs.info(path)
    stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or info.get("created")
    return (int(info.get("size") or 0), str(stamp))


def file_hash(url: str) -> str:
    """SHA-256 of the bytes behind ``url``, memoised on its fingerprint."""
    fp = fingerprint(url)
    with _MEMO_LOCK:
        hit = _HASH_MEMO.get(url)
    if hit and hit[0] == fp:
        return hit[1]
    digest = storage.content_hash(url)
    with _MEMO_LOCK:
        _HASH_MEMO[url] = (fp, digest)
    return digest


def _remember(url: str, fp: list[Any] | tuple[Any, ...], digest: str) -> None:
    with _MEMO_LOCK:
        _HASH_MEMO[url] = (tuple(fp), digest)


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------
def settings_hash(settings, sections: Iterable[str]) -> str:
    """Hash of the named settings sections; [project] reduced to name + seed."""
    sections = list(sections)
    parts: dict[str, str] = {}
    science = [s for s in sections if s != "project"]
    if science:
        parts["sections"] = settings.section_hash(*science)
    # The output location and storage credentials never change what a stage
    # computes; the project name (artifact names) and seed (random picks) do.
    parts["project"] = storage.hash_object({"name": settings.project.name, "seed": settings.project.seed})
    return storage.hash_object(parts)


def _urls(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [u for v in value.values() for u in _urls(v)]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in _urls(v)]
    raise TypeError(f"cache inputs must be URLs (or lists/dicts of URLs), got {type(value).__name__}")


def input_hashes(inputs: Mapping[str, Any]) -> dict[str, list[str]]:
    """Content hashes of the input artifacts, by input name, in given order."""
    out: dict[str, list[str]] = {}
    for name, value in inputs.items():
        urls = _urls(value)
        missing = [u for u in urls if not storage.exists(u)]
        if missing:
            raise FileNotFoundError(f"input {name!r} not found: {', '.join(missing)}")
        out[name] = [file_hash(u) for u in urls]
    return out


def _software_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("beastflow")
    except md.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


def unit_key(stage: str, label: str, settings, sections: Iterable[str], inputs: Mapping[str, Any]) -> str:
    return storage.hash_object({
        "format": CACHE_FORMAT,
        # a new beastflow release may compute differently: its first run recomputes
        "software": _software_version(),
        "stage": stage,
        "unit": label,
        "settings": settings_hash(settings, sections),
        "inputs": input_hashes(inputs),
    })


# --------------------------------------------------------------------------
# stage results <-> JSON
# --------------------------------------------------------------------------
def encode_result(result: Any) -> Any:
    """A stage's returned value (dataclasses of URLs, lists, dicts, scalars) as JSON data.

    Dataclasses become ``{"__dataclass__": "module:Qualname", "fields": {...}}``
    so ``decode_result`` can rebuild the very objects the stage returned;
    numpy scalars and arrays become Python numbers and lists.
    """
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        cls = type(result)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode_result(getattr(result, f.name)) for f in dataclasses.fields(result)}}
    if isinstance(result, Mapping):
        return {str(k): encode_result(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [encode_result(v) for v in result]
    if hasattr(result, "tolist"):  # numpy scalar / array
        return result.tolist()
    return result


def decode_result(data: Any) -> Any:
    if isinstance(data, Mapping):
        if "__dataclass__" in data:
            mod, _, qual = data["__dataclass__"].partition(":")
            obj: Any = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
            return obj(**{k: decode_result(v) for k, v in data["fields"].items()})
        return {k: decode_result(v) for k, v in data.items()}
    if isinstance(data, list):
        return [decode_result(v) for v in data]
    return data


def result_urls(result: Any, output_root: str) -> list[str]:
    """Every string in a stage result that names an artifact below the output root."""
    root = output_root.rstrip("/") + "/"
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            if v.startswith(root):
                found.append(v)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            walk(dataclasses.asdict(v))

    walk(result)
    return found


# --------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------
def record_url(settings, stage: str, label: str) -> str:
    return settings.artifact(".cache", stage, f"{label}.json")


def read_hit(settings, stage: str, label: str, key: str) -> Any | None:
    """The cached stage result when the record matches ``key`` and its outputs exist."""
    url = record_url(settings, stage, label)
    try:
        rec = storage.read_json(url)
    except (FileNotFoundError, ValueError):
        return None
    if rec.get("format") != CACHE_FORMAT or rec.get("key") != key:
        return None
    outputs = rec.get("outputs", {})
    for out_url in outputs:
        if not storage.exists(out_url):
            return None  # an output was deleted: recompute rather than trust the record
    # Re-use the output hashes recorded when the unit ran, as long as the
    # files are unchanged, so downstream keys need not re-read them.
    for out_url, meta in outputs.items():
        try:
            if tuple(meta["fingerprint"]) == fingerprint(out_url):
                _remember(out_url, meta["fingerprint"], meta["sha256"])
        except (KeyError, TypeError, FileNotFoundError):
            pass
    try:
        return decode_result(rec["result"])
    except Exception:  # the result type moved or changed: treat as a miss
        return None


def write_record(settings, stage: str, label: str, key: str, result: Any, extra: Mapping[str, Any] | None = None) -> None:
    urls = result_urls(result, settings.output)
    outputs = {}
    for u in urls:
        if storage.exists(u):
            fp = fingerprint(u)
            digest = storage.content_hash(u)
            _remember(u, fp, digest)
            outputs[u] = {"sha256": digest, "fingerprint": list(fp)}
    rec = {
        "format": CACHE_FORMAT,
        "stage": stage,
        "unit": label,
        "key": key,
        "result": encode_result(result),
        "outputs": outputs,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        rec.update(extra)
    storage.write_json(record_url(settings, stage, label), rec)
