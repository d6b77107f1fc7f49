"""[execution] settings: where trim and fit run, retries, caching, progress.

These settings change *how* and *where* the pipeline runs, never *what* it
computes, so no stage includes this section in its cache key: switching from
the in-process executor to SLURM reuses every cached artifact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section


class Slurm(Section):
    #: sbatch --partition (None: the cluster's default partition)
    partition: str | None = None
    #: sbatch --account (None: the user's default account)
    account: str | None = None
    #: sbatch --qos (None: the partition's default)
    qos: str | None = None
    #: wall-clock limit of one array task, minutes
    time_min: int = Field(default=60, ge=1)
    cpus_per_task: int = Field(default=1, ge=1)
    #: memory request per array task = mem_overhead_gb + mem_factor x (bytes of the
    #: largest grid the task loads: the trimmed grid + noise model for fits, the
    #: full (sub)grid + noise model for trims), rounded up to whole GB
    mem_overhead_gb: float = Field(default=1.0, ge=0)
    mem_factor: float = Field(default=3.0, ge=1)
    #: never ask for more than this (GB); a unit needing more is an error, not a silent cap
    mem_max_gb: float = Field(default=512.0, gt=0)
    #: at most this many tasks in one sbatch --array (larger stages are cut in several arrays)
    max_array_size: int = Field(default=1000, ge=1)
    #: at most this many array tasks running at once (sbatch --array=...%N); 0 = no limit
    array_parallelism: int = Field(default=0, ge=0)
    #: submitit log/pickle folder; must be on a file system the compute nodes see.
    #: A relative path is taken below the output folder when that is local, else
    #: below the current directory.
    folder: str = "slurm_logs"
    #: extra sbatch options without the leading "--", e.g. { constraint = "skylake" }
    extra: dict[str, str] = Field(default_factory=dict)


class Execution(Section):
    #: where trim and fit units run: "inprocess" (one Prefect task each, in this
    #: process), "processes" (a pool of `workers` local processes) or "slurm"
    #: (SLURM job arrays through submitit); the other stages always run in-process
    executor: Literal["inprocess", "processes", "slurm"] = "inprocess"
    #: local processes for executor = "processes"
    workers: int = Field(default=2, ge=1)
    #: extra attempts of a failed task / array element (only the failed one is rerun)
    retries: int = Field(default=2, ge=0)
    #: seconds to wait before each retry
    retry_delay_s: float = Field(default=5.0, ge=0)
    #: reuse outputs whose cache record matches (stage, settings, input hashes);
    #: false recomputes everything (the records are still rewritten)
    cache: bool = True
    #: progress bars on the command line (the Prefect UI always gets progress artifacts)
    progress: bool = True
    #: a run holds a lease on project.output (one run per output); a second run waits
    #: this many seconds for it, then stops naming the holder (0 = stop at once)
    lease_wait_s: float = Field(default=0.0, ge=0)
    #: numba's cache of compiled kernels for every pool worker and SLURM task
    #: (exported as NUMBA_CACHE_DIR): a folder on a file system the compute nodes
    #: share; relative = below the directory the run starts in. None: the
    #: NUMBA_CACHE_DIR of the environment, else next to the installed sources
    numba_cache_dir: str | None = None
    #: before fit units go to a pool or SLURM array, compile the fit kernels into
    #: that cache once (a SLURM job on the array's partition) unless it holds this
    #: installation's already; false: every task compiles whatever the cache lacks
    warm_up: bool = True
    slurm: Slurm = Field(default_factory=Slurm)

    @field_validator("numba_cache_dir")
    @classmethod
    def _local_folder(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "://" in v):
            raise ValueError(f"must be a folder path on a shared file system, got {v!r}")
        return v
