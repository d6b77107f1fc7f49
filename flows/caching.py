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
stores the key, the stage's result as plain data (``beastflow.flows.result_codec``:
allow-listed result types, artifact paths relative to the output root) and,
per output artifact, its size, modification stamp and SHA-256.  A later run
is a cache hit when the record's key equals the freshly computed key *and*
every recorded output verifies (``lookup``: size, then stamp, else re-hash);
anything else is a miss that recomputes, and a record that was rejected
(changed or truncated output, invalid record) is reported with the reason.
The records live next to the artifacts, so the cache works the same on local
disk, shared scratch and S3, needs no Prefect server and travels with the
outputs.  Because keys are built from content hashes, a changed catalog row
changes the hash of the catalog, hence the keys of the stages that read it,
and — only where their outputs' bytes change — the keys of the stages further
downstream.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from beastflow import run_records, storage

from . import result_codec

#: bump when the key recipe changes, so that old records are never trusted
CACHE_FORMAT = 2


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


def fingerprint(url: str) -> tuple[int, str]:
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
    return storage.hash_object(
        {
            "format": CACHE_FORMAT,
            # a new beastflow release may compute differently: its first run recomputes
            "software": _software_version(),
            "stage": stage,
            "unit": label,
            "settings": settings_hash(settings, sections),
            "inputs": input_hashes(inputs),
        }
    )


# --------------------------------------------------------------------------
# stage results <-> JSON (plain data, allow-listed types: beastflow.flows.result_codec)
# --------------------------------------------------------------------------
def encode_result(result: Any, root: str | None = None) -> Any:
    return result_codec.encode(result, root)


def decode_result(data: Any, root: str | None = None) -> Any:
    return result_codec.decode(data, root)


def result_urls(result: Any, output_root: str) -> list[str]:
    """Every string in a stage result that names an artifact below the output root."""
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            if result_codec.relative_to_root(v, output_root) is not None:
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
    # the layout is the library's (beastflow.run_records), so readers need not import flows
    return settings.artifact(run_records.RECORDS_DIR, stage, f"{label}.json")


@dataclasses.dataclass
class Lookup:
    """Outcome of a cache lookup: the result on a hit, else why it missed."""

    hit: bool
    result: Any = None
    #: why it missed ("" on a hit)
    reason: str = ""
    #: a record existed but was rejected (changed/corrupt output, invalid record):
    #: worth a warning, unlike a plain first run or a changed input
    rejected: bool = False


def _miss(reason: str, rejected: bool = False) -> Lookup:
    return Lookup(False, None, reason, rejected)


def lookup(settings, stage: str, label: str, key: str) -> Lookup:
    """Look the unit up; a hit is handed out only after its outputs were verified.

    Verification per recorded output: it exists and has the recorded size; when
    its modification stamp (mtime, S3 ETag) also equals the recorded one, that
    is taken as unchanged (fast path); otherwise the bytes are re-hashed and
    must give the recorded SHA-256.  A copied run folder (new stamps, same
    bytes) is re-hashed once and its record refreshed.
    """
    root = settings.output
    url = record_url(settings, stage, label)
    try:
        rec = storage.read_json(url)
    except FileNotFoundError:
        return _miss("no cache record")
    except (ValueError, UnicodeDecodeError) as exc:
        return _miss(f"cache record {url} is not valid JSON ({exc})", rejected=True)
    if not isinstance(rec, dict):
        return _miss(f"cache record {url} is not a JSON object", rejected=True)
    if rec.get("format") != CACHE_FORMAT:
        return _miss(f"cache record format {rec.get('format')!r} is not {CACHE_FORMAT}")
    if rec.get("key") != key:
        return _miss("inputs, settings or software changed")
    outputs = rec.get("outputs")
    if not isinstance(outputs, dict):
        return _miss(f"cache record {url} has no outputs table", rejected=True)
    refreshed = False
    verified: set[str] = set()
    try:
        for rel, meta in outputs.items():
            out_url = result_codec.below_root(rel, root)
            if not storage.exists(out_url):
                return _miss(f"output {rel} is missing", rejected=True)
            size, stamp = fingerprint(out_url)
            if size != meta["size"]:
                return _miss(f"output {rel} changed size ({meta['size']} -> {size} bytes)", rejected=True)
            if stamp != meta["stamp"]:
                digest = storage.content_hash(out_url)
                if digest != meta["sha256"]:
                    return _miss(
                        f"output {rel} changed content (SHA-256 {meta['sha256'][:12]} -> {digest[:12]})", rejected=True
                    )
                meta["stamp"] = stamp
                refreshed = True
            _remember(out_url, (size, stamp), meta["sha256"])
            verified.add(out_url)
        result = result_codec.decode(rec.get("result"), root)
    except (result_codec.InvalidRecord, KeyError, TypeError) as exc:
        return _miss(f"cache record {url} is invalid ({exc})", rejected=True)
    unverified = [u for u in result_urls(result, root) if u not in verified]
    if unverified:
        return _miss(f"cache record {url} names outputs it holds no hash for: {unverified[:3]}", rejected=True)
    if refreshed:  # copied / moved / touched but identical: next time the fast path holds
        try:
            storage.write_json(url, rec)
        except OSError:
            pass
    return Lookup(True, result)


def read_hit(settings, stage: str, label: str, key: str) -> Any | None:
    """The cached stage result when the record matches ``key`` and its outputs verify, else None."""
    found = lookup(settings, stage, label, key)
    return found.result if found.hit else None


def write_record(
    settings, stage: str, label: str, key: str, result: Any, extra: Mapping[str, Any] | None = None
) -> None:
    root = settings.output
    outputs = {}
    for u in result_urls(result, root):
        if storage.exists(u):
            size, stamp = fingerprint(u)
            digest = storage.content_hash(u)
            _remember(u, (size, stamp), digest)
            outputs[result_codec.relative_to_root(u, root)] = {"sha256": digest, "size": size, "stamp": stamp}
    rec = {
        "format": CACHE_FORMAT,
        "stage": stage,
        "unit": label,
        "key": key,
        "result": result_codec.encode(result, root),
        "outputs": outputs,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if extra:
        rec.update(extra)
    storage.write_json(record_url(settings, stage, label), rec)
