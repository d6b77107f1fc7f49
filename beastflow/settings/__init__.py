"""One validated TOML settings file for a whole beastflow run.

``load_settings(url)`` reads the file through fsspec, validates it against the
schema (unknown keys and wrong types are errors that name the key), resolves
relative file paths against the settings file's folder, and returns a frozen
``Settings`` object.  ``Settings.section_hash(name)`` gives the stable hash used
for provenance and caching.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from beastflow import storage

from .asts import ASTs
from .base import Section
from .execution import Execution
from .fit import Fit
from .noise import NoiseModel, Trim
from .observations import Observations
from .physics import Physics
from .globus import Storage


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the file and the key."""


class Project(Section):
    name: str = "beastflow"
    #: where every artifact goes: a plain path or any fsspec URL (s3://bucket/run)
    output: str = "beastflow-output"
    #: per-protocol fsspec options, e.g. [project.storage_options.s3] endpoint_url = ...
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = 1234


class Settings(Section):
    #: "beast-2.1" reproduces every QUIRK / BUG? of BEAST 2.1.0 that changes numbers
    compat: Literal["none", "beast-2.1"] = "none"
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
    def _splinter_bands(self):
        # a per-band splinter table must name exactly the bands of physics.filters
        if isinstance(self.noise_model.splinter_fraction, dict):
            from beastflow.noise.splinter import band_fractions

            band_fractions(self.noise_model.splinter_fraction, self.physics.filters)
        if self.noise_model.model == "splinter":
            if self.observations.ast_results:
                raise ValueError("observations.ast_results is set, but noise_model.model = \"splinter\" uses no "
                                 "artificial-star tests: remove one of the two")
            # no AST stage runs: AST settings would be accepted and ignored
            from .base import reject_unused

            reject_unused(self.asts, "asts", list(type(self.asts).model_fields),
                          "with noise_model.model = 'splinter' (no AST stage runs)")
        return self

    @property
    def beast_compat(self) -> bool:
        return self.compat == "beast-2.1"

    @property
    def output(self) -> str:
        return self.project.output

    def artifact(self, *parts: str) -> str:
        """URL of an artifact below the run's output location."""
        return storage.join(self.project.output, *parts)

    def section_hash(self, *names: str) -> str:
        """Stable hash of the named sections (all settings if none named)."""
        data = self.model_dump(mode="json", exclude={"source"})
        if names:
            data = {n: data[n] for n in names}
        return storage.hash_object(data)

    def activate(self) -> "Settings":
        """Install the storage options so every fsspec access uses them."""
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
    base_dir = os.path.dirname(os.path.abspath(url)) if storage.protocol(url) == "file" and "://" not in url else url.rsplit("/", 1)[0]
    return settings_from_dict(data, where=url, base_dir=base_dir)


def default_settings() -> Settings:
    return Settings()


__all__ = ["Settings", "SettingsError", "load_settings", "settings_from_dict", "default_settings", "Project"]
