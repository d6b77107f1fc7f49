"""One line per failure: what the command line prints instead of a traceback.

Every error that ends a ``beastflow`` command is reduced to one line naming the
file, setting or service and the cause; ``-v`` adds the traceback.  Messages
raised by beastflow itself already name the file or key; errors from libraries
(polars, astropy, h5py, botocore, Prefect) are recognised here and prefixed
with what they are about.
"""

from __future__ import annotations


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _s3_error(exc: BaseException) -> str | None:
    """botocore / s3fs credential and permission errors, with the hint where credentials come from."""
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(_first_line(str(e)) for e in _chain(exc))
    markers = (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "Access Denied",
        "NoCredentialsError",
        "Unable to locate credentials",
        "ExpiredToken",
    )
    if names & {"NoCredentialsError", "ClientError", "PartialCredentialsError"} or any(m in text for m in markers):
        return (
            f"S3 refused the request ({_first_line(str(exc)) or type(exc).__name__}); credentials come from "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, an AWS profile or the instance role"
        )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def one_line(exc: BaseException) -> str:
    """The error as one line naming what it is about."""
    s3 = _s3_error(exc)
    if s3:
        return s3
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return f"{exc.filename}: {exc.strerror or _first_line(str(exc))}"
    msg = _first_line(str(exc))
    if "ephemeral Prefect API server" in msg or "Timed out while attempting to connect" in msg:
        return (
            f"{msg} (the temporary Prefect API did not start in time: raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or point PREFECT_API_URL at a server)"
        )
    own = (
        "SettingsError",
        "CatalogError",
        "TrimError",
        "OutsideOutputError",
        "FileNotFoundError",
        "FileExistsError",
        "ValueError",
        "KeyError",
    )
    if type(exc).__name__ in own:
        # beastflow's own messages may list several keys on several lines: one line, "; "-separated
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
