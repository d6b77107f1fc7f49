"""A Prefect global concurrency limit per output: deployments queue instead of colliding.

The lease on the output root (``beastflow.lease``) is what guarantees one run
per output; with a Prefect server the deployments (UI runs, the nightly
schedule, the catalog watch) also take one slot of the global concurrency
limit named after the output, so a second run waits in Prefect, visibly,
instead of failing on the lease.  ``deployments/serve.py --settings`` creates
the limit; ``prefect gcl create $(python -m beastflow.flows.output_limit field.toml) --limit 1``
does it for prefect.yaml deployments.  Without the limit (plain
``beastflow run``) this is a no-op.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from beastflow import storage


def limit_name(output: str) -> str:
    """``beastflow-output-<hash>``: the same output (however spelled) gives the same name."""
    proto, path = storage._canonical(output)
    return "beastflow-output-" + storage.hash_object(f"{proto}://{path}")[:16]


def ensure_output_limit(settings) -> str:
    """Create (or reset to 1 slot) the output's global concurrency limit on the Prefect server."""
    from prefect.client.orchestration import get_client

    name = limit_name(settings.output)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    return name


@contextlib.contextmanager
def output_concurrency(settings) -> Iterator[None]:
    """Hold the output's concurrency slot for the block, when that limit exists on the server."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    from beastflow.lease import OutputBusy

    name = limit_name(settings.output)
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        yield
        return
    wait = settings.execution.lease_wait_s
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=max(1.0, wait), strict=True))
    except TimeoutError:
        raise OutputBusy(
            f"output {settings.output} is in use by another flow run (Prefect concurrency limit "
            f"{name} has no free slot after {max(1.0, wait):.0f} s)"
        ) from None
    with stack:
        yield


if __name__ == "__main__":  # print the limit name of a settings file's output
    from beastflow.settings import load_settings

    print(limit_name(load_settings(sys.argv[1]).output))
