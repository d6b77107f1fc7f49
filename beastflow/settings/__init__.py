"""One validated TOML settings file for a whole beastflow run.

``load_settings(url)`` reads the file through fsspec, validates it against the
schema (unknown keys and wrong types are errors that name the key), resolves
relative file paths against the settings file's folder, and returns a frozen
``Settings`` object.  ``Settings.section_hash(name)`` gives the stable hash used
for provenance and caching.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from beastflow import storage
from beastflow.behaviour import Behaviour, resolve

from .asts import ASTs
from .base import Section, reject_unused
from .execution import Execution
from .fit import Fit
from .globus import Storage
from .noise import NoiseModel, Trim
from .observations import Observations
from .physics import Physics


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the file and the key."""


#: a project name is the first part of every artifact's file name, so it must be
#: one plain file-name component: no separators, no "..", nothing hidden
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


#: storage-option names that hold credentials (fsspec / s3fs / gcsfs / adlfs / botocore spellings)
_CREDENTIAL_NAMES = re.compile(
    r"(^|_)(key|secret|token|password|passwd|credentials?|account_key|sas_token|connection_string)$"
    r"|^aws_access_key_id$|^client_secret$",
    re.IGNORECASE,
)
#: option names ending like a credential but naming none
_NOT_CREDENTIALS = {"sse_kms_key_id", "ssekmskeyid"}


def _credential_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted names of every credential-like key below ``node`` (for the error message)."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if _CREDENTIAL_NAMES.search(str(k)) and str(k).lower() not in _NOT_CREDENTIALS:
                out.append(name)
            else:
                out += _credential_keys(v, name)
    return out


class Project(Section):
    name: str = "beastflow"
    #: where every artifact goes: a plain path or any fsspec URL (s3://bucket/run)
    output: str = "beastflow-output"
    #: per-protocol fsspec options, e.g. [project.storage_options.s3] endpoint_url = ...
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 1234

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _PROJECT_NAME.fullmatch(v) or ".." in v:
            raise ValueError(
                "must be a plain file-name prefix (letters, digits, '_', '-', '.', '+'; "
                "starting with a letter or digit; no '/', '\\' or '..')"
            )
        return v

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        found = _credential_keys(v)
        if found:
            raise ValueError(
                f"{', '.join(found)}: credentials do not belong in the settings file (it is passed to Prefect, "
                "SLURM jobs and provenance); take them from the environment (AWS_ACCESS_KEY_ID, "
                'AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), an AWS profile (profile = "name") or the '
                "instance's role"
            )
        return v

    @field_validator("output")
    @classmethod
    def _real_output(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name an output folder or URL (it is empty)")
        if v.strip() != v:
            raise ValueError("must not start or end with white space")
        path = v.split("://", 1)[-1]
        if not path.strip("/") or ".." in path.split("/"):
            raise ValueError("must be a folder below a root or bucket, without '..' components")
        # absolute once loaded: settings built in Python (or the default) would
        # otherwise name a different folder in every process that changes directory
        # (a SLURM task, a pool worker, a flow run by a worker started elsewhere)
        return v if "://" in v else os.path.abspath(os.path.expanduser(v))


class Settings(Section):
    #: "beast-2.1" reproduces every QUIRK / BUG? of BEAST 2.1.0 that changes numbers
    compat: Literal["none", "beast-2.1"] = "none"
    #: single behaviour fields overriding the compat profile, per stage:
    #: [behaviour.fit] pmax = "probability" (names: beastflow/behaviour.py)
    behaviour: dict[str, dict[str, Any]] = Field(default_factory=dict)
    project: Project = Field(default_factory=Project)
    physics: Physics = Field(default_factory=Physics)
    observations: Observations = Field(default_factory=Observations)
    asts: ASTs = Field(default_factory=ASTs)
    noise_model: NoiseModel = Field(default_factory=NoiseModel)
    trim: Trim = Field(default_factory=Trim)
    fit: Fit = Field(default_factory=Fit)
    execution: Execution = Field(default_factory=Execution)
    #: transfers into and out of Globus-synced scratch ([storage.globus])
    storage: Storage = Field(default_factory=Storage)
    #: where the file was read from ("" for settings built in Python)
    source: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _resolve_behaviour(self):
        # an unknown [behaviour] stage or key, or a wrong value, is a settings error
        resolve(self.compat, self.behaviour)
        return self

    @model_validator(mode="after")
    def _splinter_bands(self):
        # a per-band splinter table must name exactly the bands of physics.filters
        if isinstance(self.noise_model.splinter_fraction, dict):
            from beastflow.noise.splinter import band_fractions

            band_fractions(self.noise_model.splinter_fraction, self.physics.filters)
        if self.noise_model.model == "splinter":
            if self.observations.ast_results:
                raise ValueError(
                    'observations.ast_results is set, but noise_model.model = "splinter" uses no '
                    "artificial-star tests: remove one of the two"
                )
            # no AST stage runs: AST settings would be accepted and ignored
            reject_unused(
                self.asts,
                "asts",
                list(type(self.asts).model_fields),
                "with noise_model.model = 'splinter' (no AST stage runs)",
            )
        return self

    @property
    def resolved_behaviour(self) -> Behaviour:
        """The compat profile with the [behaviour] overrides applied (beastflow/behaviour.py).

        Every stage reads this object, never the profile name; resolving is a few
        dataclass copies, so it is not cached (``model_copy`` would keep a stale one).
        """
        return resolve(self.compat, self.behaviour)

    @property
    def output(self) -> str:
        return self.project.output

    def artifact(self, *parts: str) -> str:
        """URL of an artifact below the run's output location (never outside it)."""
        url = storage.join(self.project.output, *parts)
        storage.require_inside(url, self.project.output, what="artifact")
        return url

    def section_hash(self, *names: str) -> str:
        """Stable hash of the named sections (all settings if none named)."""
        data = self.model_dump(mode="json", exclude={"source"})
        # the cache key follows what the run does, not how it was spelled
        data["compat"] = self.resolved_behaviour.as_dict()
        if names:
            data = {n: data[n] for n in names}
        # files of the run (its catalog, ASTs, ...) by their place in the output folder: a run
        # folder copied or moved keeps its cache; the files' contents are hashed as unit inputs
        return storage.hash_object(storage.portable(data, self.project.output))

    def activate(self) -> Settings:
        """Install the storage options so every fsspec access uses them.

        Process-wide: called once at an entry point (a CLI command, a flow's
        ``load``, a pool or SLURM task's ``execute_unit``), never by a stage."""
        storage.configure(self.project.storage_options)
        return self


def _format_errors(where: str, err: ValidationError) -> str:
    lines = [f"{where}: invalid settings"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `beastflow init` for the template)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = e.get("input")
        got_s = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{got_s}")
    return "\n".join(lines)


# Keys that hold file locations: relative paths are taken relative to the
# settings file, so a settings file and its inputs can move together.
_PATH_KEYS = [
    ("project", "output"),
    ("physics", "isochrones", "table"),
    ("observations", "catalog"),
    ("observations", "ast_results"),
    ("observations", "source_density", "reference_image"),
    ("asts", "existing_file"),
    ("asts", "reference_image"),
    ("noise_model", "absflux_covariance"),
    ("storage", "globus", "scratch_dir"),
    ("storage", "globus", "token_file"),
]


def _resolve_paths(data: dict[str, Any], base_dir: str) -> None:
    def fix(v: Any) -> Any:
        if isinstance(v, str) and v and "://" not in v and not os.path.isabs(os.path.expanduser(v)):
            return os.path.normpath(os.path.join(base_dir, v))
        if isinstance(v, str) and v.startswith("~"):
            return os.path.expanduser(v)
        return v

    for path in _PATH_KEYS:
        node: Any = data
        for p in path[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = fix(node[path[-1]])
    files = data.get("physics", {}).get("stellar_library", {}).get("files")
    if isinstance(files, dict):
        for k in list(files):
            files[k] = fix(files[k])


def settings_from_dict(data: dict[str, Any], where: str = "settings", base_dir: str | None = None) -> Settings:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if base_dir is not None:
        import copy

        data = copy.deepcopy(data)
        _resolve_paths(data, base_dir)
    try:
        s = Settings.model_validate(data)
    except ValidationError as err:
        raise SettingsError(_format_errors(where, err)) from None
    return s.model_copy(update={"source": where if base_dir is not None else ""})


def load_settings(url: str) -> Settings:
    """Read and validate a TOML settings file from any fsspec URL."""
    try:
        raw = storage.read_bytes(url)
    except FileNotFoundError:
        raise SettingsError(f"{url}: settings file not found") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{url}: not valid TOML: {exc}") from None
    base_dir = (
        os.path.dirname(os.path.abspath(url))
        if storage.protocol(url) == "file" and "://" not in url
        else url.rsplit("/", 1)[0]
    )
    return settings_from_dict(data, where=url, base_dir=base_dir)


def default_settings() -> Settings:
    return Settings()


__all__ = ["Settings", "SettingsError", "load_settings", "settings_from_dict", "default_settings", "Project"]
