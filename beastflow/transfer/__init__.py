"""Moving a run's files between collections: Globus-synced scratch (``[storage.globus]``).

``base``: the ``Transfer`` protocol, requests, reports, waiting with a time-out;
``globus``: the Globus Transfer service through globus-sdk, credentials from the
environment; ``local``: local folders standing in for collections (tests, dry
runs); ``plan``: which files of a run move where.  No Prefect import: the
stage-in/stage-out tasks are in ``flows/transfer.py``.
"""

from .base import (
    PERMANENT_TRANSFER_ERRORS,
    Transfer,
    TransferAuthError,
    TransferError,
    TransferFailed,
    TransferItem,
    TransferReport,
    TransferRequest,
    TransferTimeout,
)
from .local import LocalCopyTransfer

__all__ = [
    "PERMANENT_TRANSFER_ERRORS",
    "LocalCopyTransfer",
    "Transfer",
    "TransferAuthError",
    "TransferError",
    "TransferFailed",
    "TransferItem",
    "TransferReport",
    "TransferRequest",
    "TransferTimeout",
]
