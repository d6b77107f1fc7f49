"""Which files of a run move where, for ``[storage.globus]``.

Three kinds of transfer, all between the cluster collection (the scratch
folder, ``destination_*``) and another collection:

* **stage in** (before the run): ``source_path/<p>`` -> ``destination_path/<p>``
  for each ``p`` of ``stage_in``; the settings' input paths name the copies
  below ``scratch_dir``;
* **stage out** (after the merge): the merged results and the report ->
  ``results_path`` on the source collection;
* **grid cache** (optional): the physics model's artifacts and cache record
  <-> ``grid_cache_path``, so a purged scratch does not cost a new SED grid:
  the returning record makes the physics model a cache hit.

Local artifact URLs become Globus paths through ``scratch_dir`` <->
``destination_path``, so ``project.output`` must lie inside ``scratch_dir``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence

from beastflow import storage

from .base import TransferItem, TransferRequest


def globus_settings(settings):
    g = settings.storage.globus
    if g is None:
        raise ValueError("no [storage.globus] table in the settings")
    return g


def _local(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check(settings) -> None:
    """Settings that cannot work with Globus: one-line errors naming the keys."""
    g = globus_settings(settings)
    out = settings.output
    needs_output = bool(g.stage_out) or g.grid_cache_path is not None
    if needs_output and (storage.protocol(out) != "file" or "://" in out):
        raise ValueError(
            f"project.output = {out!r} is not a local path: Globus stage-out and the grid cache "
            "need the output on the cluster's scratch (inside storage.globus.scratch_dir)"
        )
    scratch = _local(g.local_scratch)
    if needs_output and not _inside(_local(out), scratch):
        raise ValueError(
            f"project.output = {out!r} is not inside storage.globus.scratch_dir = {scratch!r}: "
            "Globus can only send back files it sees on the destination collection"
        )
    if (
        g.token_file
        and storage.protocol(out) == "file"
        and "://" not in out
        and _inside(_local(g.token_file), _local(out))
    ):
        raise ValueError(
            f"storage.globus.token_file = {g.token_file!r} lies inside project.output; keep "
            "credentials outside every folder a run writes or ships"
        )


def globus_path(settings, local_url: str) -> str:
    """The destination-collection Globus path of a local file or folder below ``scratch_dir``."""
    g = globus_settings(settings)
    scratch = _local(g.local_scratch)
    path = _local(local_url)
    if not _inside(path, scratch):
        raise ValueError(f"{local_url} is not inside storage.globus.scratch_dir = {scratch!r}")
    rel = os.path.relpath(path, scratch).replace(os.sep, "/")
    return g.destination_path.rstrip("/") + "/" if rel == "." else posixpath.join(g.destination_path, rel)


def _label(settings, what: str) -> str:
    # Globus labels allow letters, digits, spaces, '-', '_' and ',' only
    name = "".join(c if c.isalnum() or c in " -_," else "-" for c in settings.project.name)
    return f"beastflow {name} {what}"


def staged_inputs(settings) -> list[str]:
    """Local paths of the copies that stage-in makes (below ``scratch_dir``)."""
    g = globus_settings(settings)
    return [os.path.join(_local(g.local_scratch), *p.rstrip("/").split("/")) for p in g.stage_in]


def stage_in_request(settings) -> TransferRequest | None:
    g = globus_settings(settings)
    if not g.stage_in:
        return None
    items = tuple(
        TransferItem(posixpath.join(g.source_path, p), posixpath.join(g.destination_path, p), recursive=p.endswith("/"))
        for p in g.stage_in
    )
    return TransferRequest(
        g.source_collection, g.destination_collection, items, _label(settings, "stage in"), g.verify_checksum
    )


def stage_out_request(settings, files: Sequence[str], folders: Sequence[str] = ()) -> TransferRequest | None:
    """Local result files (and whole folders, e.g. the report) -> ``results_path``, by base name."""
    g = globus_settings(settings)
    dest = g.results_folder
    items = [
        TransferItem(globus_path(settings, f), posixpath.join(dest, posixpath.basename(f.rstrip("/")))) for f in files
    ]
    items += [
        TransferItem(
            globus_path(settings, d).rstrip("/") + "/",
            posixpath.join(dest, posixpath.basename(d.rstrip("/"))) + "/",
            recursive=True,
        )
        for d in folders
    ]
    if not items:
        return None
    return TransferRequest(
        g.destination_collection, g.source_collection, tuple(items), _label(settings, "stage out"), g.verify_checksum
    )


def merged_files(settings, merged) -> list[str]:
    """The merge's artifacts that ``stage_out`` asks for (stats / pdf1d / pdf2d / lnp)."""
    g = globus_settings(settings)
    return [getattr(merged, kind) for kind in ("stats", "pdf1d", "pdf2d", "lnp") if kind in g.stage_out]


def grid_cache_in_request(settings) -> TransferRequest | None:
    """The cached physics model -> the output folder (recursive), if a grid cache is set."""
    g = globus_settings(settings)
    if g.grid_cache_path is None:
        return None
    out = globus_path(settings, settings.output).rstrip("/") + "/"
    return TransferRequest(
        g.grid_collection,
        g.destination_collection,
        (TransferItem(g.grid_cache_path.rstrip("/") + "/", out, recursive=True),),
        _label(settings, "grid cache in"),
        g.verify_checksum,
    )


def grid_cache_out_request(settings, urls: Iterable[str]) -> TransferRequest | None:
    """The physics model's artifacts and cache record -> ``grid_cache_path``, keeping their place below the output."""
    g = globus_settings(settings)
    if g.grid_cache_path is None:
        return None
    root = _local(settings.output)
    items = []
    for u in urls:
        rel = os.path.relpath(_local(u), root).replace(os.sep, "/")
        if rel.startswith("../"):
            raise ValueError(f"{u} is not inside project.output; it cannot go to the grid cache")
        items.append(TransferItem(globus_path(settings, u), posixpath.join(g.grid_cache_path, rel)))
    if not items:
        return None
    return TransferRequest(
        g.destination_collection, g.grid_collection, tuple(items), _label(settings, "grid cache out"), g.verify_checksum
    )


def request_key(request: TransferRequest, local_files: Iterable[str]) -> str:
    """Identity of an outgoing transfer: where everything goes and the SHA-256 of what is sent.

    Equal keys mean the receiving side already holds these very bytes (the
    previous transfer with this key succeeded), so it need not run again.
    """
    return storage.hash_object(
        {
            "from": request.source_collection,
            "to": request.destination_collection,
            "items": [[i.source, i.destination, i.recursive] for i in request.items],
            "verify_checksum": request.verify_checksum,
            "sha256": {f: storage.content_hash(f) for f in sorted(_expand(local_files))},
        }
    )


def _expand(paths: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for folder, _, names in os.walk(p):
                out += [os.path.join(folder, n) for n in names]
        else:
            out.append(p)
    return out
