"""What every file mover offers: submit a transfer, wait for it, look a path up.

A ``Transfer`` moves files between two collections (Globus endpoints) named by
their ids, with paths as the collections show them.  ``GlobusTransfer`` does
it through the Globus Transfer service; ``LocalCopyTransfer`` copies between
local folders standing in for collections (tests, dry runs).  Both follow
Globus' semantics: ``sync_level = "checksum"`` skips files whose destination
copy already has the same checksum, and a task ends SUCCEEDED or FAILED.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class TransferError(RuntimeError):
    """A transfer that did not complete; the message names the task and why, in one line."""


class TransferFailed(TransferError):
    """The transfer task ended FAILED (or was cancelled)."""


class TransferTimeout(TransferError):
    """The transfer task did not finish within the time-out and was cancelled."""


class TransferAuthError(TransferError):
    """No usable credentials, or the service rejected them (expired or revoked token)."""


#: errors a retry of the same transfer cannot fix
PERMANENT_TRANSFER_ERRORS = (TransferFailed, TransferTimeout, TransferAuthError)


@dataclasses.dataclass(frozen=True)
class TransferItem:
    source: str
    destination: str
    #: a folder and everything below it
    recursive: bool = False


@dataclasses.dataclass(frozen=True)
class TransferRequest:
    source_collection: str
    destination_collection: str
    items: tuple[TransferItem, ...]
    #: shown in the Globus web app's activity list
    label: str
    verify_checksum: bool = True


@dataclasses.dataclass
class TransferReport:
    """A finished transfer: what a stage-in/out task returns and the cache records keep."""

    task_id: str
    #: web page of the task (Globus activity) or a file:// URL for local copies
    link: str
    status: str
    label: str
    files: int = 0
    files_transferred: int = 0
    #: files not copied because the destination already had the same checksum
    files_skipped: int = 0
    bytes_transferred: int = 0
    #: local paths of the copies on the machine running the pipeline (stage-in) or
    #: Globus paths on the receiving collection (stage-out)
    destinations: list[str] = dataclasses.field(default_factory=list)

    @property
    def nothing_moved(self) -> bool:
        return self.files_transferred == 0


class Transfer(Protocol):
    def submit(self, request: TransferRequest) -> str:
        """Start the transfer; return its task id."""

    def status(self, task_id: str) -> dict:
        """The task document: at least ``status`` (ACTIVE / INACTIVE / SUCCEEDED / FAILED)."""

    def cancel(self, task_id: str) -> None:
        """Stop a task (used when it ran past the time-out)."""

    def exists(self, collection: str, path: str) -> bool:
        """Whether ``path`` exists on ``collection``."""

    def link(self, task_id: str) -> str:
        """Where a person can look at the task."""


def wait(
    transfer: Transfer,
    task_id: str,
    label: str,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll until the task finishes; the finished task document.

    FAILED raises ``TransferFailed``; still running after ``timeout_s``:
    the task is cancelled (so it cannot write behind a later retry's back) and
    ``TransferTimeout`` is raised.  Both messages name the task id and link.
    """
    start = clock()
    while True:
        doc = transfer.status(task_id)
        state = str(doc.get("status", "")).upper()
        if state == "SUCCEEDED":
            return doc
        if state == "FAILED":
            raise TransferFailed(
                f"Globus transfer task {task_id} ({label}) failed: {_why(doc)}; see {transfer.link(task_id)}"
            )
        if state == "INACTIVE":
            # Globus pauses a task whose collection credentials (consent, activation) expired;
            # it will not go on without the user, so waiting for the time-out helps nobody
            raise TransferAuthError(
                f"Globus transfer task {task_id} ({label}) is INACTIVE ({_why(doc)}): a collection needs "
                f"fresh credentials or consent; renew them in the Globus web app, then rerun; "
                f"see {transfer.link(task_id)}"
            )
        waited = clock() - start
        if waited >= timeout_s:
            try:
                transfer.cancel(task_id)
            except Exception as exc:  # noqa: BLE001 - the time-out is the error to report
                log.warning("could not cancel Globus transfer task %s: %s", task_id, type(exc).__name__)
            raise TransferTimeout(
                f"Globus transfer task {task_id} ({label}) still {state or 'unknown'} "
                f"({doc.get('nice_status') or 'no details'}) after {timeout_s:g} s "
                f"(storage.globus.timeout_s); cancelled; see {transfer.link(task_id)}"
            )
        sleep(max(0.0, min(poll_s, timeout_s - waited)))


def _why(doc: dict) -> str:
    fatal = doc.get("fatal_error") or {}
    if isinstance(fatal, dict) and (fatal.get("code") or fatal.get("description")):
        text = f"{fatal.get('code', '')}: {fatal.get('description', '')}".strip(": ")
    else:
        text = str(doc.get("nice_status_short_description") or doc.get("nice_status") or "no reason given")
    return " ".join(text.split())[:300]


def run(
    transfer: Transfer,
    request: TransferRequest,
    timeout_s: float,
    poll_s: float,
    on_submitted: Callable[[str, str], None] | None = None,
    **wait_kw,
) -> TransferReport:
    """Submit, report the task id and link (``on_submitted``), wait, summarise."""
    task_id = transfer.submit(request)
    link = transfer.link(task_id)
    if on_submitted is not None:
        on_submitted(task_id, link)
    doc = wait(transfer, task_id, request.label, timeout_s, poll_s, **wait_kw)
    return TransferReport(
        task_id=task_id,
        link=link,
        status=str(doc.get("status")),
        label=request.label,
        files=int(doc.get("files") or 0),
        files_transferred=int(doc.get("files_transferred") or 0),
        files_skipped=int(doc.get("files_skipped") or 0),
        bytes_transferred=int(doc.get("bytes_transferred") or 0),
        destinations=[it.destination for it in request.items],
    )


def items(pairs: Sequence[tuple[str, str]] | Sequence[tuple[str, str, bool]]) -> tuple[TransferItem, ...]:
    return tuple(TransferItem(*p) for p in pairs)
