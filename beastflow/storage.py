"""One path type everywhere: fsspec URLs (plain paths, ``file://``, ``s3://``, ...).

Every artifact of the pipeline is read and written through this module so that a
run can live on local disk, a Globus-synced scratch area or an S3 bucket without
any stage knowing which.  Writes are atomic: the bytes go to a temporary name
next to the target and are moved into place only when complete, so an
interrupted stage never leaves a half-written artifact that a cached rerun would
mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
from fsspec.core import url_to_fs

# Storage options per protocol ("s3" -> {"endpoint_url": ..., "key": ...}),
# installed from the settings file by ``configure``; never hard-coded.
_STORAGE_OPTIONS: dict[str, dict[str, Any]] = {}


def configure(storage_options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Register per-protocol storage options (from the settings' [project] table)."""
    _STORAGE_OPTIONS.clear()
    for proto, opts in (storage_options or {}).items():
        _STORAGE_OPTIONS[proto] = dict(opts)


def storage_options_for(url: str) -> dict[str, Any]:
    proto = protocol(url)
    return dict(_STORAGE_OPTIONS.get(proto, {}))


def protocol(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0]
    return "file"


def filesystem(url: str):
    """Return ``(fs, path)`` for a URL, using the configured storage options."""
    return url_to_fs(url, **storage_options_for(url))


# --------------------------------------------------------------------------
# writes stay inside the run's output root
# --------------------------------------------------------------------------
class OutsideOutputError(ValueError):
    """A write (or an artifact name) that would land outside the run's output root."""


#: while a stage runs, the output root every write must stay inside (None: unconfined)
_WRITE_ROOT: contextvars.ContextVar[str | None] = contextvars.ContextVar("beastflow_write_root", default=None)


def _canonical(url: str) -> tuple[str, str]:
    """(protocol, normalised absolute path) of a URL, for containment checks."""
    proto = protocol(url)
    path = url.split("://", 1)[1] if "://" in url else url
    if proto == "file":
        return proto, os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    return proto, posixpath.normpath("/" + path)


def is_inside(url: str, root: str) -> bool:
    """True when ``url`` is ``root`` or below it (after resolving '..' and relative paths)."""
    (pu, u), (pr, r) = _canonical(url), _canonical(root)
    if pu != pr:
        return False
    return u == r or u.startswith(r.rstrip("/") + "/")


def require_inside(url: str, root: str, what: str = "write") -> None:
    if not is_inside(url, root):
        raise OutsideOutputError(f"refusing {what} {url}: it is outside the run's output root {root}")


@contextlib.contextmanager
def confine_writes(root: str) -> Iterator[None]:
    """Every write through this module inside the block must land below ``root``."""
    token = _WRITE_ROOT.set(root)
    try:
        yield
    finally:
        _WRITE_ROOT.reset(token)


def _check_write(url: str) -> None:
    root = _WRITE_ROOT.get()
    if root is not None:
        require_inside(url, root)


def output_root() -> str | None:
    """The output root of the stage running now (set by ``confine_writes``), else None."""
    return _WRITE_ROOT.get()


def portable(obj: Any, root: str | None = None) -> Any:
    """``obj`` with every string naming a file below the output root made relative to it.

    What an artifact records about other artifacts of the same run (provenance,
    manifests, metadata) must not name the folder it was written in: a run
    folder that is copied or moved (local -> S3 and back) stays self-contained.
    ``resolve`` turns such a relative name back into a URL.
    """
    root = root if root is not None else output_root()
    if not root:
        return obj
    if isinstance(obj, str):
        if is_inside(obj, root) and ("://" in obj or os.path.isabs(obj)):
            rel = posixpath.relpath(_canonical(obj)[1], _canonical(root)[1])
            return obj if rel == "." else rel
        return obj
    if isinstance(obj, Mapping):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, root) for v in obj]
    return obj


def resolve(name: str, root: str) -> str:
    """A name recorded by ``portable`` (relative to the output root) or an absolute URL, as a URL."""
    if "://" in name or os.path.isabs(name):
        return name
    url = join(root, name)
    require_inside(url, root, what="recorded path")
    return url


def join(base: str, *parts: str) -> str:
    """Join URL path components with '/' (also on local paths)."""
    out = base.rstrip("/")
    for p in parts:
        out = out + "/" + str(p).strip("/")
    return out


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    _check_write(url)
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)


def remove(url: str) -> None:
    _check_write(url)
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def listdir(url: str) -> list[str]:
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    proto = protocol(url)
    names = fs.ls(path, detail=False)
    if proto == "file" and "://" not in url:
        return sorted(names)
    return sorted(f"{proto}://{n}" if "://" not in n else n for n in names)


def open_url(url: str, mode: str = "rb", **kwargs):
    """``fsspec.open`` with configured storage options (context manager)."""
    if any(c in mode for c in "wax+"):
        _check_write(url)
    return fsspec.open(url, mode, **storage_options_for(url), **kwargs)


#: object stores whose single-object write (PUT, or a completed multipart upload) is atomic: an
#: object is either absent or whole, so it is written once under its final key.  A temporary key
#: and a "rename" would send every byte twice (upload, then a server-side copy) for nothing.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def atomic_put(url: str) -> bool:
    """True when ``url`` lives on an object store where one write is already atomic."""
    return protocol(url) in ATOMIC_PUT_PROTOCOLS


def _put_once(fs, local: str, path: str) -> None:
    """Upload a finished local file under its final key, once (object stores)."""
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.put_file(local, path)


def _temporary_sibling(path: str) -> str:
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_write(url: str, mode: str = "wb") -> Iterator[Any]:
    """Write to a temporary sibling, then move it over ``url``.

    On error the temporary file is removed and any previous version of the
    artifact stays untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    _check_write(url)
    fs, path = filesystem(url)
    if atomic_put(url):
        # a streamed object-store file would be committed by close() even on error: stage the
        # bytes locally, then one PUT under the final key
        with local_copy_for_write(url) as local, open(local, mode) as fh:
            yield fh
        return
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with fs.open(tmp, mode) as fh:
            yield fh
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


@contextlib.contextmanager
def local_copy_for_write(url: str, suffix: str = "") -> Iterator[str]:
    """Yield a local file name to write (HDF5 needs a real file), then upload atomically.

    For local URLs the file is a temporary sibling that is renamed into place;
    for remote URLs it is a local temporary file, uploaded once under the final
    name on object stores (``atomic_put``), else to a temporary name and moved.
    """
    _check_write(url)
    fs, path = filesystem(url)
    if protocol(url) == "file":
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = _temporary_sibling(path) + suffix
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    import tempfile

    fd, tmp = tempfile.mkstemp(suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        if atomic_put(url):
            _put_once(fs, tmp, path)
            return
        remote_tmp = _temporary_sibling(path)
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.put_file(tmp, remote_tmp)
        fs.mv(remote_tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def local_copy_for_read(url: str) -> Iterator[str]:
    """Yield a local file name holding the content of ``url`` (no copy for local files)."""
    fs, path = filesystem(url)
    if protocol(url) == "file":
        if not os.path.exists(path):
            raise FileNotFoundError(f"{url}: no such file")
        yield path
        return
    import tempfile

    fd, tmp = tempfile.mkstemp(suffix=posixpath.splitext(path)[1])
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        os.remove(tmp)


def write_bytes(url: str, data: bytes) -> None:
    with atomic_write(url, "wb") as fh:
        fh.write(data)


def read_bytes(url: str) -> bytes:
    with open_url(url, "rb") as fh:
        return fh.read()


def write_json(url: str, obj: Any) -> None:
    write_bytes(url, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def content_hash(url: str, chunk_size: int = 1 << 22) -> str:
    """SHA-256 of the bytes behind a URL (used for provenance and caching)."""
    h = hashlib.sha256()
    with open_url(url, "rb") as fh:
        while True:
            block = fh.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def hash_object(obj: Any) -> str:
    """Stable SHA-256 of a JSON-serialisable object (settings sections, parameters)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def size(url: str) -> int:
    fs, path = filesystem(url)
    return int(fs.size(path))
