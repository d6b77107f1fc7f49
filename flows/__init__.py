"""Prefect flows and tasks around the beastflow stages.

``flows.pipeline`` holds the flows (one per stage plus ``pipeline_flow``);
``flows.tasks`` the Prefect tasks (cache lookup, retries, arrays);
``flows.caching``, ``flows.executors`` and ``flows.stages`` are Prefect-free,
so that SLURM array tasks and pool workers import them without starting
anything Prefect-related.  Nothing is imported here for the same reason.
"""
