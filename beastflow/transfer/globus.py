"""Transfers through the Globus Transfer service (globus-sdk's ``TransferClient``).

Credentials come from the environment only, through globus-sdk's standard
authorizers, and live in memory:

* a **confidential client** (a service account for unattended runs):
  ``GLOBUS_CLIENT_ID`` + ``GLOBUS_CLIENT_SECRET`` -> client-credentials grant;
* a **user's refresh token**: ``GLOBUS_CLIENT_ID`` (a registered native app)
  + ``BEASTFLOW_GLOBUS_REFRESH_TOKEN``, or a globus-sdk JSON token storage file
  written by ``python -m beastflow.transfer login`` (``[storage.globus]
  token_file``; rotated refresh tokens are written back to that file only).

Nothing here logs, returns or stores a token; error messages carry the
service's code and message, never request headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import globus_sdk
from globus_sdk.token_storage import JSONTokenStorage

from .base import TransferAuthError, TransferFailed, TransferRequest

ENV_CLIENT_ID = "GLOBUS_CLIENT_ID"
ENV_CLIENT_SECRET = "GLOBUS_CLIENT_SECRET"
ENV_REFRESH_TOKEN = "BEASTFLOW_GLOBUS_REFRESH_TOKEN"
#: namespace of beastflow's tokens inside a token storage file
TOKEN_NAMESPACE = "beastflow"
TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
ACTIVITY_URL = "https://app.globus.org/activity/{task_id}"


def authorizer_from_environment(token_file: str | None = None, environ: Mapping[str, str] | None = None):
    """A globus-sdk authorizer for the Transfer service from the environment (see module doc)."""
    env = os.environ if environ is None else environ
    client_id = env.get(ENV_CLIENT_ID, "").strip()
    secret = env.get(ENV_CLIENT_SECRET, "").strip()
    scopes = globus_sdk.TransferClient.scopes.all
    if client_id and secret:
        confidential = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
        return globus_sdk.ClientCredentialsAuthorizer(confidential, scopes)
    if not client_id:
        raise TransferAuthError(
            f"no Globus credentials: set {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} (a confidential client), or "
            f"{ENV_CLIENT_ID} (a native app) with {ENV_REFRESH_TOKEN} or [storage.globus] token_file "
            "(python -m beastflow.transfer login)"
        )
    native = globus_sdk.NativeAppAuthClient(client_id)
    refresh = env.get(ENV_REFRESH_TOKEN, "").strip()
    if refresh:
        return globus_sdk.RefreshTokenAuthorizer(refresh, native)
    if token_file:
        if not os.path.isfile(token_file):
            raise TransferAuthError(
                f"[storage.globus] token_file {token_file} does not exist; "
                "create it with: python -m beastflow.transfer login --token-file ..."
            )
        storage = JSONTokenStorage(token_file, namespace=TOKEN_NAMESPACE)
        data = storage.get_token_data(TRANSFER_RESOURCE_SERVER)
        if data is None or not data.refresh_token:
            raise TransferAuthError(
                f"[storage.globus] token_file {token_file} holds no Globus Transfer refresh "
                "token; log in again: python -m beastflow.transfer login --token-file ..."
            )
        return globus_sdk.RefreshTokenAuthorizer(
            data.refresh_token,
            native,
            access_token=data.access_token,
            expires_at=data.expires_at_seconds,
            on_refresh=storage.store_token_response,
        )
    raise TransferAuthError(
        f"{ENV_CLIENT_ID} is set but there is no secret or refresh token: set {ENV_CLIENT_SECRET}, "
        f"{ENV_REFRESH_TOKEN} or [storage.globus] token_file"
    )


def _api_error(exc: globus_sdk.GlobusAPIError, doing: str) -> Exception:
    """A one-line beastflow error for a Globus API error; None-like passthrough for transient ones."""
    body = exc.raw_json if isinstance(exc.raw_json, dict) else {}
    # Transfer errors carry code/message; OAuth2 errors from Globus Auth carry error/error_description
    code = exc.code if exc.code and exc.code != "Error" else body.get("error", "")
    message = exc.message or body.get("error_description") or ""
    what = f"{exc.http_status} {code}: {' '.join(str(message).split())}"[:300]
    if exc.http_status == 401 or isinstance(exc, globus_sdk.AuthAPIError) and exc.http_status in (400, 403):
        return TransferAuthError(
            f"Globus rejected the credentials while {doing} ({what}): the token expired or was revoked; "
            "log in again (python -m beastflow.transfer login) or check the confidential client"
        )
    if 400 <= exc.http_status < 500 and exc.http_status not in (408, 409, 429):
        return TransferFailed(f"Globus refused {doing} ({what})")
    return exc  # 5xx, throttling: transient, the task's retries handle it


class GlobusTransfer:
    """``Transfer`` through a ``globus_sdk.TransferClient``."""

    def __init__(self, client: globus_sdk.TransferClient):
        self.client = client

    @classmethod
    def from_environment(
        cls, token_file: str | None = None, environ: Mapping[str, str] | None = None
    ) -> GlobusTransfer:
        try:  # renewing authorizers ask Globus Auth for an access token right away
            authorizer = authorizer_from_environment(token_file, environ)
        except globus_sdk.GlobusAPIError as exc:
            err = _api_error(exc, "getting a Globus access token")
            if err is exc:
                raise
            raise err from None
        return cls(globus_sdk.TransferClient(authorizer=authorizer, app_name="beastflow"))

    def _call(self, doing: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except globus_sdk.GlobusAPIError as exc:
            err = _api_error(exc, doing)
            if err is exc:
                raise
            raise err from None

    def submit(self, request: TransferRequest) -> str:
        data = globus_sdk.TransferData(
            request.source_collection,
            request.destination_collection,
            label=request.label[:128],
            # checksum sync: a file whose copy already matches is not sent again, so
            # re-running a stage-in or stage-out moves only what changed
            sync_level="checksum",
            verify_checksum=request.verify_checksum,
            fail_on_quota_errors=True,
            notify_on_succeeded=False,
        )
        for item in request.items:
            data.add_item(item.source, item.destination, recursive=item.recursive)
        res = self._call(f"submitting transfer {request.label!r}", self.client.submit_transfer, data)
        return str(res["task_id"])

    def status(self, task_id: str) -> dict:
        return dict(self._call(f"reading transfer task {task_id}", self.client.get_task, task_id).data)

    def cancel(self, task_id: str) -> None:
        self._call(f"cancelling transfer task {task_id}", self.client.cancel_task, task_id)

    def exists(self, collection: str, path: str) -> bool:
        try:
            self.client.operation_stat(collection, path)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status == 404:
                return False
            err = _api_error(exc, f"looking up {path} on collection {collection}")
            if err is exc:
                raise
            raise err from None
        return True

    def link(self, task_id: str) -> str:
        return ACTIVITY_URL.format(task_id=task_id)


def login(token_file: str, client_id: str | None = None, mapped_collections: tuple[str, ...] = ()) -> None:
    """Native-app login: open the printed URL, paste the code; the refresh token goes to ``token_file``.

    globus-sdk's standard authorization-code flow (with PKCE); the file is
    created user-readable only (globus-sdk's token storage does that).
    ``mapped_collections``: Globus Connect Server v5 mapped collections (most
    cluster scratch collections) need the user's consent to their data_access
    scope, asked for here once instead of failing the first transfer.
    """
    client_id = client_id or os.environ.get(ENV_CLIENT_ID, "").strip()
    if not client_id:
        raise TransferAuthError(
            f"set {ENV_CLIENT_ID} to the id of your registered Globus native app "
            "(https://app.globus.org/settings/developers)"
        )
    auth = globus_sdk.NativeAppAuthClient(client_id)
    scope = globus_sdk.TransferClient.scopes.all
    if mapped_collections:
        scope = scope.with_dependencies(
            [globus_sdk.scopes.GCSCollectionScopes(c).data_access for c in mapped_collections]
        )
    auth.oauth2_start_flow(requested_scopes=scope, refresh_tokens=True)
    print(f"Log in at:\n\n  {auth.oauth2_get_authorize_url()}\n")
    code = input("and paste the authorization code here: ").strip()
    tokens = auth.oauth2_exchange_code_for_tokens(code)
    JSONTokenStorage(token_file, namespace=TOKEN_NAMESPACE).store_token_response(tokens)
    print(f"refresh token stored in {token_file}")
