"""Looking at a finished run: ``beastflow report OUTPUT``, ``beastflow star OUTPUT STAR_ID...``
and ``beastflow export OUTPUT --format fits|ecsv``."""

from __future__ import annotations

import argparse
import os


def cmd_report(args: argparse.Namespace) -> int:
    from beastflow.report import make_report

    out = args.output_url
    rep = make_report(out, project=args.project, truth_url=args.truth, report_url=args.report)
    for s in rep.sections:
        status = f"{len(s.images)} plot(s)" if not s.error else f"FAILED: {s.error}"
        print(f"  {s.title}: {status}")
    for q, m in rep.recovery.items():
        print(
            f"  recovery {q}: median (fit-truth)/sigma = {m['median_z']:+.2f}, "
            f"{100 * m['coverage_68']:.0f}% of {m['n']} truths inside p16-p84"
        )
    shown = rep.index
    if "://" not in shown and not os.path.relpath(shown).startswith(".."):
        shown = os.path.relpath(shown)
    print(f"report: {shown}")
    return 1 if any(s.error for s in rep.sections) and args.strict else 0


def _shown(url: str) -> str:
    if "://" not in url and not os.path.relpath(url).startswith(".."):
        return os.path.relpath(url)
    return url


def cmd_export(args: argparse.Namespace) -> int:
    from beastflow.fit.export import export_stats

    for fmt in args.format:
        print(f"wrote {_shown(export_stats(args.output_url, fmt, project=args.project))}")
    return 0


def cmd_star(args: argparse.Namespace) -> int:
    from beastflow.report.star import make_star_pages

    for page in make_star_pages(args.output_url, args.star_ids, project=args.project, report_url=args.report):
        print(f"star {page.star_id}: {_shown(page.html)} ({len(page.images)} plots)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots and an HTML report of a finished run's output folder")
    p.add_argument("output_url", help="the run's output folder (project.output; any fsspec URL)")
    p.add_argument("--project", help="project name P of the artifacts (default: from P_stats.parquet)")
    p.add_argument(
        "--truth",
        help="truth table (star_id + true parameters) for the recovery plot; "
        "default: P_truth.parquet in the output folder",
    )
    p.add_argument("--report", help="folder for the report (default: OUTPUT_URL/report)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a plot could not be drawn")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="the merged stats table as FITS or ECSV, with units and provenance")
    p.add_argument("output_url", help="the run's output folder (project.output; any fsspec URL)")
    p.add_argument(
        "--format",
        nargs="+",
        choices=["fits", "ecsv"],
        default=["fits"],
        help="file format(s) (default fits): OUTPUT/P_stats.fits, OUTPUT/P_stats.ecsv",
    )
    p.add_argument("--project", help="project name P (default: from P_stats.parquet)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("star", help="one page per star: SED fit with residuals, 1-D PDFs over the prior, corner plot")
    p.add_argument("output_url", help="the run's output folder (project.output; any fsspec URL)")
    p.add_argument("star_ids", nargs="+", metavar="STAR_ID", help="star_id value(s) of the stats table")
    p.add_argument("--project", help="project name P (default: from P_stats.parquet)")
    p.add_argument("--report", help="folder for the pages (default: OUTPUT_URL/report)")
    p.set_defaults(func=cmd_star)
