"""Settings passed to flows by reference: ``settings-ref:{output}#sha256={hash}``.

Prefect stores every flow run's parameters in its database (and shows them in
the UI); the SLURM executor pickles what it is given.  The pipeline therefore
hands its stage flows a reference instead of the settings: the validated
settings are written once, content-addressed, to
``{output}/.beastflow/settings/{hash}.json`` (without ``project.output``, so a
copied run folder stays self-contained), and each flow loads and re-validates
them, refusing a file whose content no longer matches the hash.  Settings never
hold credentials (refused when they load), and a reference holds nothing but
the output location and a hash.
"""

from __future__ import annotations

from beastflow import storage

PREFIX = "settings-ref:"


def is_reference(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _record_url(output: str, digest: str) -> str:
    return storage.join(output, ".beastflow", "settings", f"{digest}.json")


def by_reference(settings) -> str:
    """Write the settings below their output (once) and return the reference."""
    data = settings.model_dump(mode="json", exclude={"source"})
    data["project"] = {k: v for k, v in data["project"].items() if k != "output"}
    body = {"settings": data, "source": settings.source}
    digest = storage.hash_object(body)
    url = _record_url(settings.output, digest)
    if not storage.exists(url):
        storage.write_json(url, body)
    return f"{PREFIX}{settings.output}#sha256={digest}"


def resolve(ref: str):
    """The Settings behind a reference (validated again); an edited record is an error."""
    from beastflow.settings import SettingsError, settings_from_dict

    output, sep, digest = ref[len(PREFIX) :].rpartition("#sha256=")
    if not sep or not output or len(digest) != 64:
        raise SettingsError(f"{ref}: not a settings reference (settings-ref:OUTPUT#sha256=HASH)")
    url = _record_url(output, digest)
    try:
        body = storage.read_json(url)
    except FileNotFoundError:
        raise SettingsError(f"{url}: the settings of this run are gone (run the pipeline again)") from None
    if storage.hash_object(body) != digest:
        raise SettingsError(f"{url}: content does not match its hash {digest[:12]} (modified after the run began)")
    data = body["settings"]
    data["project"] = {**data["project"], "output": output}
    s = settings_from_dict(data, where=url)
    return s.model_copy(update={"source": body.get("source") or ""})
