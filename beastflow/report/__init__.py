"""Plots and an HTML report of a run's artifacts (``beastflow report OUTPUT_URL``).

``make_report(output_url)`` finds the artifacts of a finished run below its
output location, draws the diagnostic plots (``beastflow.report.plots``) and
writes ``report/index.html`` linking them.  Stage times come from the run's
own records through ``beastflow.run_records``.
"""

from beastflow.report.artifacts import Artifacts, find_artifacts
from beastflow.report.html import Report, make_report

__all__ = ["make_report", "find_artifacts", "Artifacts", "Report"]
