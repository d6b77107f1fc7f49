"""What a run recorded about itself below its output folder, and the one public way to read it.

The pipeline (``flows/caching.py``) writes one JSON record per unit at
``{output}/.cache/{stage}/{label}.json``.  Most of a record is the cache's own
business (key, encoded result, output hashes: its format may change with
``CACHE_FORMAT``); what this module reads, and all another reader may rely on,
is ``stage``, ``seconds`` and ``created``.  Keeping the layout here, in the
library, lets the report time the stages without knowing the workflow layer.

Work done before the pipeline started (the demo builds its field and grid, so
the pipeline's physics unit then finds the grid up to date) is written with
``record_prelude`` to ``{output}/run_prelude.json``: steps with their seconds,
and facts worth showing at the top of a report.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping

from beastflow import storage

RECORDS_DIR = ".cache"
PRELUDE_NAME = "run_prelude.json"
#: the pipeline's stage order (flows/pipeline.py): timings are listed in it
STAGE_ORDER = [
    "physicsmodel",
    "density",
    "ast_inputs",
    "demo_asts",
    "cut",
    "split",
    "noisemodel",
    "trim",
    "grid_info",
    "fit",
    "merge",
]


def record_url(output_url: str, stage: str, label: str) -> str:
    """Where the record of one unit (``label``) of ``stage`` lives."""
    return storage.join(output_url, RECORDS_DIR, stage, f"{label}.json")


def record_urls(output_url: str) -> list[str]:
    """Every unit record below ``output_url`` (none when the run kept no records)."""
    cache = storage.join(output_url, RECORDS_DIR)
    if not storage.exists(cache):
        return []
    out: list[str] = []
    for stage_dir in storage.listdir(cache):
        out.extend(u for u in storage.listdir(stage_dir) if u.endswith(".json"))
    return out


@dataclasses.dataclass(frozen=True)
class Prelude:
    """Work done before the pipeline started: seconds per step, facts about it."""

    seconds: dict[str, float]
    facts: dict[str, str]


def record_prelude(output_url: str, seconds: Mapping[str, float], facts: Mapping[str, str] | None = None) -> str:
    url = storage.join(output_url, PRELUDE_NAME)
    storage.write_json(url, {"seconds": dict(seconds), "facts": dict(facts or {})})
    return url


def read_prelude(output_url: str) -> Prelude:
    """The prelude of a run (empty when there was none)."""
    url = storage.join(output_url, PRELUDE_NAME)
    if not storage.exists(url):
        return Prelude({}, {})
    d = storage.read_json(url)
    return Prelude(
        {str(k): float(v) for k, v in d.get("seconds", {}).items()},
        {str(k): str(v) for k, v in d.get("facts", {}).items()},
    )


def stage_timings(output_url: str) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and number of units per stage, from the unit records of a run."""
    secs: dict[str, float] = {}
    units: dict[str, int] = {}
    created: dict[str, str] = {}
    for u in record_urls(output_url):
        try:
            rec = storage.read_json(u)
        except Exception:  # a record being rewritten: skip it
            continue
        st = rec.get("stage") or posixpath.basename(posixpath.dirname(u))
        secs[st] = secs.get(st, 0.0) + float(rec.get("seconds") or 0.0)
        units[st] = units.get(st, 0) + 1
        created[st] = min(created.get(st, "~"), str(rec.get("created", "~")))
    # pipeline order for the known stages, then any other stage by its first record's time
    order = sorted(
        secs, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), created.get(s, "~"))
    )
    return {s: secs[s] for s in order}, {s: units[s] for s in order}


def run_timings(output_url: str) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and units per step of a whole run: the prelude's steps, then the stages."""
    secs, units = stage_timings(output_url)
    pre = read_prelude(output_url)
    return {**pre.seconds, **secs}, {**{k: 1 for k in pre.seconds}, **units}
