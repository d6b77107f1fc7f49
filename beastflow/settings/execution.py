"""[execution] settings: where trim and fit run, retries."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class Slurm(Section):
    partition: str | None = None
    account: str | None = None
    time_min: int = Field(default=60, ge=1)
    cpus_per_task: int = Field(default=1, ge=1)
    #: memory request = overhead + factor x trimmed grid bytes
    mem_overhead_gb: float = Field(default=1.0, ge=0)
    mem_factor: float = Field(default=3.0, ge=1)
    max_array_size: int = Field(default=1000, ge=1)
    folder: str = "slurm_logs"


class Execution(Section):
    executor: Literal["inprocess", "processes", "slurm"] = "inprocess"
    workers: int = Field(default=2, ge=1)
    retries: int = Field(default=2, ge=0)
    retry_delay_s: float = Field(default=5.0, ge=0)
    slurm: Slurm = Field(default_factory=Slurm)
