"""A transfer between local folders that stand in for Globus collections.

``LocalCopyTransfer({collection_id: folder})`` maps each collection to a local
folder; a Globus path ``/x/y`` (or ``/~/x/y``) on it is ``folder/x/y``.  The
copy happens when the task is submitted, with Globus' rules: checksum sync
(files whose destination already has the same SHA-256 are skipped), a missing
source fails the task with ``fatal_error`` as Globus reports it.  Used by the
tests and for dry runs of a cluster setup on one machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping

from .base import TransferRequest


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class LocalCopyTransfer:
    def __init__(self, roots: Mapping[str, str]):
        self.roots = {str(k): os.path.abspath(v) for k, v in roots.items()}
        self.tasks: dict[str, dict] = {}
        #: every submitted request, in order (tests look at what moved)
        self.requests: list[TransferRequest] = []

    def local_path(self, collection: str, path: str) -> str:
        try:
            root = self.roots[collection]
        except KeyError:
            raise ValueError(
                f"collection {collection} is not one of the local stand-ins {sorted(self.roots)}"
            ) from None
        rel = path.removeprefix("/~")
        full = os.path.normpath(os.path.join(root, rel.lstrip("/")))
        if full != root and not full.startswith(root + os.sep):
            raise ValueError(f"{path!r} leaves collection {collection}")
        return full

    def submit(self, request: TransferRequest) -> str:
        task_id = str(uuid.uuid4())
        self.requests.append(request)
        doc = {
            "task_id": task_id,
            "label": request.label,
            "status": "SUCCEEDED",
            "files": 0,
            "files_transferred": 0,
            "files_skipped": 0,
            "bytes_transferred": 0,
        }
        try:
            for item in request.items:
                src = self.local_path(request.source_collection, item.source)
                dst = self.local_path(request.destination_collection, item.destination)
                if not os.path.exists(src):
                    raise FileNotFoundError(f"{item.source} not found on {request.source_collection}")
                if item.recursive:
                    for folder, _, names in os.walk(src):
                        for name in sorted(names):
                            f = os.path.join(folder, name)
                            self._copy(f, os.path.join(dst, os.path.relpath(f, src)), doc)
                else:
                    self._copy(src, dst, doc)
        except FileNotFoundError as exc:
            doc.update(
                status="FAILED",
                nice_status="FILE_NOT_FOUND",
                fatal_error={"code": "FILE_NOT_FOUND", "description": str(exc)},
            )
        self.tasks[task_id] = doc
        return task_id

    @staticmethod
    def _copy(src: str, dst: str, doc: dict) -> None:
        doc["files"] += 1
        if os.path.isfile(dst) and _sha256(dst) == _sha256(src):
            doc["files_skipped"] += 1
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = f"{dst}.{uuid.uuid4().hex[:8]}.partial"
        shutil.copyfile(src, tmp)
        if _sha256(tmp) != _sha256(src):  # verify_checksum, as Globus does
            os.remove(tmp)
            raise OSError(f"checksum mismatch copying {src}")
        os.replace(tmp, dst)
        doc["files_transferred"] += 1
        doc["bytes_transferred"] += os.path.getsize(dst)

    def status(self, task_id: str) -> dict:
        return dict(self.tasks[task_id])

    def cancel(self, task_id: str) -> None:
        self.tasks[task_id]["status"] = "FAILED"

    def exists(self, collection: str, path: str) -> bool:
        return os.path.exists(self.local_path(collection, path))

    def link(self, task_id: str) -> str:
        return f"local-copy://task/{task_id}"
