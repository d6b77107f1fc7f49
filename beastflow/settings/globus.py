"""[storage] settings: Globus-synced scratch ([storage.globus]).

A run on a cluster reads its inputs from, and writes its output to, a scratch
folder that Globus can reach (the *destination* collection).  The inputs come
from, and the results go back to, a folder on another collection (the
*source*: typically Globus Connect Personal on the user's laptop).  Without a
``[storage.globus]`` table nothing is transferred and the run reads and writes
where its paths point, as before.

Globus paths (``source_path``, ``destination_path``, ``results_path``,
``grid_cache_path``) are paths *as the collection shows them* ("/~/beast/m31",
"/scratch/alice/m31"); ``scratch_dir`` is the destination folder as a path on
the machine that runs the pipeline, which may differ when a collection is
rooted below "/".  No credential is ever a setting: they come from the
environment (docs/orchestration.md, "Globus").
"""

from __future__ import annotations

import posixpath
import uuid
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, model_validator

from .base import Section


def _check_collection(v: str) -> str:
    try:
        uuid.UUID(v)
    except ValueError:
        raise ValueError(
            f"expected a Globus collection id (a UUID such as '6c54cade-bde5-45c1-bdea-f4bd71dba2cc'), got {v!r}"
        ) from None
    return v


def _check_globus_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"expected an absolute Globus path starting with '/' (e.g. '/~/beast/field'), got {v!r}")
    if ".." in v.split("/"):
        raise ValueError(f"'..' is not allowed in a Globus path, got {v!r}")
    return v


def _check_relative(v: list[str]) -> list[str]:
    for p in v:
        parts = p.split("/")
        if not p or p.startswith(("/", "~")) or ".." in parts:
            raise ValueError(f"expected paths relative to source_path (no leading '/', '~' or '..'), got {p!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"paths listed twice: {sorted({p for p in v if v.count(p) > 1})}")
    return v


CollectionId = Annotated[str, AfterValidator(_check_collection)]
GlobusPath = Annotated[str, AfterValidator(_check_globus_path)]

#: artifacts that can be staged out after the run: the merged results
#: (stats table, 1-D and 2-D PDFs, sparse lnP) and the HTML report with its plots
StageOutArtifact = Literal["stats", "pdf1d", "pdf2d", "lnp", "report"]


class Globus(Section):
    #: collection holding the inputs and receiving the results (e.g. the laptop's Globus Connect Personal)
    source_collection: CollectionId
    #: folder on the source collection; stage_in paths are relative to it
    source_path: GlobusPath
    #: the cluster collection that shows the scratch folder
    destination_collection: CollectionId
    #: the scratch folder as a Globus path on the destination collection
    destination_path: GlobusPath
    #: the same folder as a path on the machine that runs the pipeline (default: destination_path);
    #: project.output must lie inside it so results can be sent back
    scratch_dir: str | None = None
    #: files or folders (trailing "/") below source_path copied to the same place below
    #: destination_path before the run; the settings' input paths point at the copies
    stage_in: Annotated[list[str], AfterValidator(_check_relative)] = Field(default_factory=list)
    #: what is sent back after the run
    stage_out: list[StageOutArtifact] = Field(default_factory=lambda: list(get_args(StageOutArtifact)))
    #: folder on the source collection for the results (default: source_path/results)
    results_path: GlobusPath | None = None
    #: keep the physics model (SED grid + its cache record) on a collection between runs, so a
    #: purged scratch does not mean recomputing it; None: no grid cache
    grid_cache_path: GlobusPath | None = None
    #: collection of grid_cache_path (default: destination_collection, e.g. the cluster's project space)
    grid_cache_collection: CollectionId | None = None
    #: Globus compares checksums after copying (and skips files whose checksum already matches)
    verify_checksum: bool = True
    #: a transfer still running after this many seconds is cancelled and fails the run
    timeout_s: float = Field(default=6 * 3600.0, gt=0)
    #: seconds between two looks at a running transfer
    poll_s: float = Field(default=15.0, gt=0)
    #: globus-sdk JSON token storage holding a refresh token (written by
    #: `python -m beastflow.transfer login`); must lie outside project.output.
    #: Not needed with a confidential client (GLOBUS_CLIENT_ID + GLOBUS_CLIENT_SECRET).
    token_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Globus:
        if self.grid_cache_path is not None:
            cache_coll = self.grid_cache_collection or self.destination_collection
            if cache_coll == self.destination_collection and _inside(self.grid_cache_path, self.destination_path):
                raise ValueError(
                    "grid_cache_path must not lie inside destination_path (the scratch folder it "
                    "protects against purges)"
                )
        elif self.grid_cache_collection is not None:
            raise ValueError("grid_cache_collection is set but grid_cache_path is not")
        return self

    @property
    def local_scratch(self) -> str:
        return (self.scratch_dir or self.destination_path).rstrip("/") or "/"

    @property
    def results_folder(self) -> str:
        return self.results_path or posixpath.join(self.source_path, "results")

    @property
    def grid_collection(self) -> str:
        return self.grid_cache_collection or self.destination_collection


def _inside(path: str, folder: str) -> bool:
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class Storage(Section):
    #: Globus transfers into and out of cluster scratch; absent: no transfers
    globus: Globus | None = None
