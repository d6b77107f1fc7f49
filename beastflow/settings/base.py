"""Shared pieces of the settings schema: strict models and range validators."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict


class Section(BaseModel):
    """A settings table: unknown keys and wrong types are errors, never defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


def _check_range(v: list[float]) -> list[float]:
    """``[min, max, step]`` (or a single ``[value]``) as BEAST's grid settings."""
    if len(v) == 1:
        return v
    if len(v) != 3:
        raise ValueError(f"expected [value] or [min, max, step], got {len(v)} numbers")
    lo, hi, step = v
    if lo > hi:
        raise ValueError(f"min ({lo}) is larger than max ({hi})")
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if hi > lo and step > hi - lo:
        raise ValueError(f"step ({step}) is larger than the range max - min ({hi - lo})")
    return v


def _check_nonempty(v: list[Any]) -> list[Any]:
    if len(v) == 0:
        raise ValueError("must not be empty")
    return v


#: ``[min, max, step]`` or ``[value]``
GridRange = Annotated[list[float], AfterValidator(_check_range)]
NonEmptyFloats = Annotated[list[float], AfterValidator(_check_nonempty)]
NonEmptyStrings = Annotated[list[str], AfterValidator(_check_nonempty)]
