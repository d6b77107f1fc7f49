"""The Globus transfer client against globus-sdk's own test fixtures (registered HTTP responses, no network).

globus-sdk ships recorded Transfer/Auth API responses (``globus_sdk.testing``)
and serves them through ``responses``; the task-status documents it does not
ship are registered here in the same way.  Time is faked, so the time-out
test takes no real time.
"""

from __future__ import annotations

import json

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response
from globus_sdk.token_storage import JSONTokenStorage, TokenStorageData

from beastflow.transfer import (
    TransferAuthError,
    TransferFailed,
    TransferItem,
    TransferRequest,
    TransferTimeout,
    base,
)
from beastflow.transfer.globus import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_REFRESH_TOKEN,
    TOKEN_NAMESPACE,
    GlobusTransfer,
    authorizer_from_environment,
)

LAPTOP = "6c54cade-bde5-45c1-bdea-f4bd71dba2cc"
CLUSTER = "1c3ff1ba-4d0c-4c9a-a2a0-2ee3a0b1c8d2"
REQUEST = TransferRequest(
    LAPTOP,
    CLUSTER,
    (
        TransferItem("/~/m31/phot.parquet", "/scratch/m31/phot.parquet"),
        TransferItem("/~/m31/asts/", "/scratch/m31/asts/", recursive=True),
    ),
    "beastflow m31 stage in",
)


@pytest.fixture(autouse=True)
def mocked_http():
    # any request without a registered response fails: nothing can reach the network
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _client(token: str = "ACCESS-TOKEN") -> GlobusTransfer:
    return GlobusTransfer(globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(token)))


def _task(task_id: str, status: str, **extra) -> dict:
    doc = {
        "DATA_TYPE": "task",
        "task_id": task_id,
        "type": "TRANSFER",
        "status": status,
        "label": REQUEST.label,
        "files": 3,
        "files_transferred": 2,
        "files_skipped": 1,
        "bytes_transferred": 4096,
        "nice_status": "OK" if status == "ACTIVE" else None,
    }
    doc.update(extra)
    return doc


def _register_task(mock, task_id: str, *docs: dict) -> None:
    for doc in docs:  # responses returns registrations of one URL in order, the last one repeatedly
        RegisteredResponse(service="transfer", path=f"/v0.10/task/{task_id}", json=doc).add(requests_mock=mock)


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def _submit_responses(mock) -> str:
    load_response("transfer.get_submission_id", requests_mock=mock)
    return load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]


def test_transfer_succeeds_with_checksum_sync_and_reports_task(mocked_http):
    task_id = _submit_responses(mocked_http)
    _register_task(mocked_http, task_id, _task(task_id, "ACTIVE"), _task(task_id, "SUCCEEDED"))
    clock = FakeClock()
    seen = []
    report = base.run(
        _client(),
        REQUEST,
        timeout_s=600,
        poll_s=10,
        on_submitted=lambda t, u: seen.append((t, u)),
        clock=clock,
        sleep=clock.sleep,
    )

    assert report.task_id == task_id and report.status == "SUCCEEDED"
    assert report.link == f"https://app.globus.org/activity/{task_id}"
    assert seen == [(task_id, report.link)]
    assert (report.files, report.files_transferred, report.files_skipped, report.bytes_transferred) == (3, 2, 1, 4096)
    assert clock.sleeps == [10]  # one poll while ACTIVE
    submitted = json.loads(next(c.request.body for c in mocked_http.calls if c.request.url.endswith("/transfer")))
    assert submitted["sync_level"] == 3  # Globus sync level 3 = "checksum"
    assert submitted["verify_checksum"] is True
    assert submitted["source_endpoint"] == LAPTOP and submitted["destination_endpoint"] == CLUSTER
    assert [(d["source_path"], d["destination_path"], d["recursive"]) for d in submitted["DATA"]] == [
        ("/~/m31/phot.parquet", "/scratch/m31/phot.parquet", False),
        ("/~/m31/asts/", "/scratch/m31/asts/", True),
    ]
    assert submitted["label"] == REQUEST.label


def test_failed_task_fails_with_one_line_naming_the_task(mocked_http):
    task_id = _submit_responses(mocked_http)
    _register_task(
        mocked_http,
        task_id,
        _task(
            task_id,
            "FAILED",
            fatal_error={"code": "PERMISSION_DENIED", "description": "Permission denied\non /scratch/m31/asts/"},
        ),
    )
    clock = FakeClock()
    with pytest.raises(TransferFailed) as err:
        base.run(_client(), REQUEST, timeout_s=600, poll_s=10, clock=clock, sleep=clock.sleep)
    msg = str(err.value)
    assert "\n" not in msg
    assert task_id in msg and "PERMISSION_DENIED" in msg and "/scratch/m31/asts/" in msg
    assert f"https://app.globus.org/activity/{task_id}" in msg


def test_time_out_cancels_the_task_and_fails(mocked_http):
    task_id = _submit_responses(mocked_http)
    _register_task(mocked_http, task_id, _task(task_id, "ACTIVE", nice_status="QUEUED"))
    RegisteredResponse(
        service="transfer",
        method="POST",
        path=f"/v0.10/task/{task_id}/cancel",
        json={"code": "Canceled", "message": "The task has been cancelled successfully."},
    ).add(requests_mock=mocked_http)
    clock = FakeClock()
    with pytest.raises(TransferTimeout) as err:
        base.run(_client(), REQUEST, timeout_s=45, poll_s=20, clock=clock, sleep=clock.sleep)
    msg = str(err.value)
    assert "\n" not in msg and task_id in msg and "45 s" in msg and "QUEUED" in msg
    assert clock.sleeps == [20, 20, 5]  # never sleeps past the time-out
    assert get_last_request(requests_mock=mocked_http).url.endswith(f"/task/{task_id}/cancel")


def test_inactive_task_fails_at_once(mocked_http):
    task_id = _submit_responses(mocked_http)
    _register_task(mocked_http, task_id, _task(task_id, "INACTIVE", nice_status_short_description="consent required"))
    clock = FakeClock()
    with pytest.raises(TransferAuthError, match=rf"{task_id}.*INACTIVE.*consent required"):
        base.run(_client(), REQUEST, timeout_s=600, poll_s=10, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_expired_access_token_is_an_auth_error(mocked_http):
    load_response("transfer.get_submission_id", requests_mock=mocked_http)
    RegisteredResponse(
        service="transfer",
        method="POST",
        path="/v0.10/transfer",
        status=401,
        json={
            "code": "AuthenticationFailed",
            "message": "Token is not active",
            "request_id": "abc",
            "resource": "/v0.10/transfer",
        },
    ).add(requests_mock=mocked_http)
    # the submission id comes first and is accepted; the submit itself is rejected
    with pytest.raises(TransferAuthError) as err:
        _client("EXPIRED-TOKEN").submit(REQUEST)
    msg = str(err.value)
    assert "\n" not in msg and "AuthenticationFailed" in msg and "Token is not active" in msg
    assert "EXPIRED-TOKEN" not in msg


def test_revoked_refresh_token_is_an_auth_error(mocked_http, monkeypatch):
    RegisteredResponse(
        service="auth",
        method="POST",
        path="/v2/oauth2/token",
        status=400,
        json={"error": "invalid_grant", "error_description": "refresh token revoked"},
    ).add(requests_mock=mocked_http)
    env = {ENV_CLIENT_ID: "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01", ENV_REFRESH_TOKEN: "REVOKED-REFRESH"}
    with pytest.raises(TransferAuthError) as err:
        GlobusTransfer.from_environment(environ=env)
    msg = str(err.value)
    assert "\n" not in msg and "invalid_grant" in msg and "refresh token revoked" in msg
    assert "REVOKED-REFRESH" not in msg


def test_confidential_client_from_environment(mocked_http):
    tokens = load_response("auth.oauth2_client_credentials_tokens", requests_mock=mocked_http)
    task_id = _submit_responses(mocked_http)
    env = {ENV_CLIENT_ID: "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01", ENV_CLIENT_SECRET: "S3CRET-VALUE"}
    assert GlobusTransfer.from_environment(environ=env).submit(REQUEST) == task_id
    token_call = next(c for c in mocked_http.calls if c.request.url.endswith("/v2/oauth2/token"))
    assert "grant_type=client_credentials" in token_call.request.body
    assert token_call.request.headers["Authorization"].startswith("Basic ")
    submit_call = next(c for c in mocked_http.calls if c.request.url.endswith("/v0.10/transfer"))
    assert submit_call.request.headers["Authorization"] == f"Bearer {tokens.metadata['access_token']}"


def test_refresh_token_from_token_file_is_rotated_in_place(mocked_http, tmp_path):
    token_file = tmp_path / "globus-tokens.json"
    JSONTokenStorage(str(token_file), namespace=TOKEN_NAMESPACE).store_token_data_by_resource_server(
        {
            "transfer.api.globus.org": TokenStorageData(
                resource_server="transfer.api.globus.org",
                identity_id=None,
                scope="urn:globus:auth:scope:transfer.api.globus.org:all",
                access_token="OLD-ACCESS",
                refresh_token="OLD-REFRESH",
                expires_at_seconds=1,
                token_type="Bearer",
            )
        }
    )
    RegisteredResponse(
        service="auth",
        method="POST",
        path="/v2/oauth2/token",
        json={
            "access_token": "NEW-ACCESS",
            "refresh_token": "NEW-REFRESH",
            "expires_in": 172800,
            "token_type": "Bearer",
            "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
            "resource_server": "transfer.api.globus.org",
            "other_tokens": [],
        },
    ).add(requests_mock=mocked_http)
    task_id = "d7f4ae0c-1111-2222-3333-444455556666"
    _register_task(mocked_http, task_id, _task(task_id, "SUCCEEDED"))

    transfer = GlobusTransfer.from_environment(
        token_file=str(token_file), environ={ENV_CLIENT_ID: "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01"}
    )
    assert transfer.status(task_id)["status"] == "SUCCEEDED"
    refresh_call = next(c for c in mocked_http.calls if c.request.url.endswith("/v2/oauth2/token"))
    assert "refresh_token=OLD-REFRESH" in refresh_call.request.body
    stored = JSONTokenStorage(str(token_file), namespace=TOKEN_NAMESPACE).get_token_data("transfer.api.globus.org")
    assert stored.refresh_token == "NEW-REFRESH"


def test_missing_credentials_name_the_variables(tmp_path):
    with pytest.raises(TransferAuthError, match=rf"{ENV_CLIENT_ID}.*{ENV_CLIENT_SECRET}"):
        authorizer_from_environment(environ={})
    with pytest.raises(TransferAuthError, match="token_file .* does not exist"):
        authorizer_from_environment(
            str(tmp_path / "nope.json"), environ={ENV_CLIENT_ID: "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01"}
        )


def test_exists_uses_operation_stat(mocked_http):
    found = load_response("transfer.operation_stat", requests_mock=mocked_http)
    assert _client().exists(found.metadata["endpoint_id"], "/~/file1.txt")


def test_exists_false_when_not_found(mocked_http):
    missing = load_response("transfer.operation_stat", case="not_found", requests_mock=mocked_http)
    assert not _client().exists(missing.metadata["endpoint_id"], "/~/foo")


def test_login_stores_refresh_token_user_only(mocked_http, tmp_path, monkeypatch, capsys):
    RegisteredResponse(
        service="auth",
        method="POST",
        path="/v2/oauth2/token",
        json={
            "access_token": "LOGIN-ACCESS",
            "refresh_token": "LOGIN-REFRESH",
            "expires_in": 172800,
            "token_type": "Bearer",
            "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
            "resource_server": "transfer.api.globus.org",
            "other_tokens": [],
        },
    ).add(requests_mock=mocked_http)
    monkeypatch.setattr("builtins.input", lambda prompt: "AUTH-CODE-FROM-BROWSER")
    from beastflow.transfer.__main__ import main

    token_file = tmp_path / "tokens" / "globus.json"
    assert (
        main(
            [
                "login",
                "--token-file",
                str(token_file),
                "--client-id",
                "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01",
                "--mapped-collection",
                CLUSTER,
            ]
        )
        == 0
    )
    url = next(ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("https://"))
    assert "client_id=8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01" in url and CLUSTER in url  # data_access consent asked
    exchange = next(c for c in mocked_http.calls if c.request.url.endswith("/v2/oauth2/token"))
    assert "code=AUTH-CODE-FROM-BROWSER" in exchange.request.body and "code_verifier=" in exchange.request.body
    assert token_file.stat().st_mode & 0o077 == 0  # readable by the user only
    stored = JSONTokenStorage(str(token_file), namespace=TOKEN_NAMESPACE).get_token_data("transfer.api.globus.org")
    assert stored.refresh_token == "LOGIN-REFRESH"
    # and the pipeline's authorizer takes it from there
    auth = authorizer_from_environment(str(token_file), environ={ENV_CLIENT_ID: "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01"})
    assert isinstance(auth, globus_sdk.RefreshTokenAuthorizer)
