"""Progress: Prefect artifacts for the UI, optional rich bars on the command line.

Every fanned-out stage gets a Prefect *progress artifact* (fraction of units,
or of stars for the fit) that is updated as units finish, and at the end a
*table artifact* listing each unit (sub-file), whether it was computed or
taken from the cache, its attempts and time.  The CLI installs a console
reporter (``console_bars``) so the same events drive progress bars in the
terminal; without it (deployments, Python calls) nothing is printed.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

_CONSOLE: Any = None  # the rich Progress installed by console_bars(), if any
_LOCK = threading.Lock()
#: seconds between two star-level updates of a running unit (Prefect API calls, console redraws)
PARTIAL_EVERY_S = 1.0


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@contextlib.contextmanager
def console_bars(enabled: bool = True) -> Iterator[None]:
    """Show rich progress bars for the stages run inside this block."""
    global _CONSOLE
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        transient=False,
    )
    with bars:
        _CONSOLE = bars
        try:
            yield
        finally:
            _CONSOLE = None


class StageProgress:
    """Progress of one stage over its units; thread-safe, cheap when nothing listens."""

    def __init__(self, stage: str, labels: list[str], stars: dict[str, int] | None = None):
        self.stage = stage
        self.labels = list(labels)
        self.stars = dict(stars or {})
        self.total_stars = sum(self.stars.values())
        self.rows: dict[str, dict[str, Any]] = {
            lb: {
                "unit": lb,
                "status": "pending",
                "attempts": 0,
                "seconds": None,
                "stars": self.stars.get(lb, 0),
                "error": "",
            }
            for lb in self.labels
        }
        self._artifact_id = None
        self._bar = None
        #: stars done inside units still running (label -> count), from the fit's star blocks
        self._partial: dict[str, int] = {}
        self._last_partial = -float("inf")
        self._t0 = time.monotonic()
        if _in_prefect_run() and self.labels:
            from prefect.artifacts import create_progress_artifact

            self._artifact_id = create_progress_artifact(
                progress=0.0,
                key=artifact_key(stage, "progress"),
                description=f"{stage}: {len(self.labels)} units"
                + (f", {self.total_stars} stars" if self.total_stars else ""),
            )
        if _CONSOLE is not None and self.labels:
            self._bar = _CONSOLE.add_task(stage, total=len(self.labels), note="")

    # --------------------------------------------------------------
    def update(self, label: str, status: str, attempt: int = 1, seconds: float | None = None, error: str = "") -> None:
        with _LOCK:
            row = self.rows.setdefault(label, {"unit": label, "stars": 0})
            row.update(status=status, attempts=attempt, error=error)
            if seconds is not None:
                row["seconds"] = round(seconds, 2)
            self._partial.pop(label, None)  # finished, failed or retried: its own count is final or void
        self._publish()

    def stars_done(self, label: str, done: int) -> None:
        """Stars finished so far inside a running unit (the fit reports after each star block);
        published at most every ``PARTIAL_EVERY_S`` seconds."""
        if not self.total_stars:
            return
        now = time.monotonic()
        with _LOCK:
            self._partial[label] = int(done)
            # the last block of a unit is always shown
            last_block = int(done) >= self.rows.get(label, {}).get("stars", 0) > 0
            if now - self._last_partial < PARTIAL_EVERY_S and not last_block:
                return
            self._last_partial = now
        self._publish()

    def snapshot(self) -> tuple[float, int, str]:
        """(fraction done, units finished, note): stars when the stage counts stars, else units."""
        with _LOCK:
            finished = [r for r in self.rows.values() if r["status"] in ("computed", "cached")]
            frac = len(finished) / max(1, len(self.rows))
            note = ""
            if self.total_stars:
                running = sum(
                    v
                    for lb, v in self._partial.items()
                    if self.rows.get(lb, {}).get("status") not in ("computed", "cached")
                )
                done_stars = sum(r["stars"] for r in finished) + running
                frac = done_stars / self.total_stars
                note = f"{done_stars}/{self.total_stars} stars"
            failed = sum(1 for r in self.rows.values() if r["status"] == "failed")
            if failed:
                note = (note + f" {failed} failed").strip()
        return frac, len(finished), note

    def _publish(self) -> None:
        if self._artifact_id is None and (self._bar is None or _CONSOLE is None):
            return
        frac, n_finished, note = self.snapshot()
        if self._artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(
                self._artifact_id,
                progress=round(100.0 * frac, 1),
                description=f"{self.stage}: {n_finished}/{len(self.rows)} units {note}".strip(),
            )
        if self._bar is not None and _CONSOLE is not None:
            if self.total_stars:  # the fit's bar counts stars, so it moves while a unit runs
                _CONSOLE.update(self._bar, completed=round(frac * self.total_stars), total=self.total_stars, note=note)
            else:
                _CONSOLE.update(self._bar, completed=n_finished, note=note)

    def finish(self) -> list[dict[str, Any]]:
        """Publish the table of units (sub-files done) and return its rows."""
        rows = [self.rows[lb] for lb in self.labels] + [r for lb, r in self.rows.items() if lb not in self.labels]
        rows = [{k: v for k, v in r.items() if k != "stars_done"} for r in rows]  # a running count, not a result
        if _in_prefect_run() and rows:
            from prefect.artifacts import create_table_artifact

            create_table_artifact(
                table=[{k: ("" if v is None else v) for k, v in r.items()} for r in rows],
                key=artifact_key(self.stage, "units"),
                description=f"{self.stage}: units done, cached or failed ({time.monotonic() - self._t0:.1f} s)",
            )
        return rows


def publish_summary(stage: str, summary: dict[str, Any], description: str) -> None:
    """A one-row table artifact (e.g. the fitted-star summary after the merge)."""
    if _in_prefect_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(
            table=[{"quantity": k, "value": v} for k, v in summary.items()],
            key=artifact_key(stage, "summary"),
            description=description,
        )


def publish_inputs(settings, given: Any) -> None:
    """A markdown artifact on the pipeline run naming its settings file, output and inputs,
    so a run started from the UI with empty parameters still says which field it processed."""
    if not _in_prefect_run():
        return
    import os

    from prefect.artifacts import create_markdown_artifact

    if given is None:
        origin = (
            "$BEASTFLOW_SETTINGS of the process running the flow"
            if os.environ.get("BEASTFLOW_SETTINGS")
            else "embedded demo field (no settings parameter, $BEASTFLOW_SETTINGS unset)"
        )
    else:
        origin = "the run's settings parameter"
    obs = settings.observations
    rows = [
        ("settings", settings.source or "(in memory)"),
        ("taken from", origin),
        ("project", settings.project.name),
        ("output", settings.output),
        ("catalog", obs.catalog or ""),
        ("AST results", obs.ast_results or ""),
        ("compat", settings.compat),
        ("executor", settings.execution.executor),
    ]
    table = "\n".join(f"| {k} | `{without_userinfo(str(v))}` |" for k, v in rows)
    create_markdown_artifact(
        markdown=f"| input | value |\n|---|---|\n{table}\n",
        key="pipeline-inputs",
        description="what this pipeline run processes",
    )


def without_userinfo(url: str) -> str:
    """``scheme://user:secret@host/path`` -> ``scheme://host/path``: no credential reaches the Prefect DB."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)
