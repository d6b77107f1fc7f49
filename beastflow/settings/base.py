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


def non_default(section: BaseModel, *names: str) -> list[str]:
    """Those of ``names`` whose value differs from the field's default.

    The settings template writes every key with its default, so "differs from
    the default" (not "was written") is what tells a deliberate choice apart.
    """
    fields = type(section).model_fields
    return [n for n in names if getattr(section, n) != fields[n].get_default(call_default_factory=True)]


def reject_unused(section: BaseModel, where: str, names: list[str], why: str) -> None:
    """Error for keys given a non-default value that the chosen options never read."""
    bad = non_default(section, *names)
    if bad:
        keys = ", ".join(f"{where}.{n} = {getattr(section, n)!r}" for n in bad)
        raise ValueError(
            f"{keys}: not used {why}; remove {'it' if len(bad) == 1 else 'them'} (or choose the option that uses it)"
        )
