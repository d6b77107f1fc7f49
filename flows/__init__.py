"""Prefect flows and tasks around the beastflow stages.

``beastflow.flows.pipeline`` holds the flows (one per stage plus ``pipeline_flow``);
``beastflow.flows.tasks`` the Prefect tasks (cache lookup, retries, arrays);
``beastflow.flows.caching``, ``beastflow.flows.executors`` and ``beastflow.flows.stages`` are Prefect-free,
so that SLURM array tasks and pool workers import them without starting
anything Prefect-related.  Nothing is imported here for the same reason.
"""
