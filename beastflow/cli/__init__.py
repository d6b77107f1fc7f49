"""``beastflow`` console script: one sub-command per pipeline stage.

Each stage's sub-commands live in their own module (``beastflow/cli/<area>.py``)
exposing ``register(subparsers)``; this module only assembles them, so adding a
stage never touches another stage's code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from beastflow import __version__
from beastflow.cli.errors import one_line

# area modules, in the order their commands appear in --help
_AREAS = ["setup", "physics", "observations", "noise", "fit", "run", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beastflow",
        description="The BEAST (Bayesian Extinction And Stellar Tool) as a resumable dataflow.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _verbosity(parser, argparse.SUPPRESS)
    parser.set_defaults(verbose=False, quiet=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        importlib.import_module(f"beastflow.cli.{area}").register(sub)
    # -v / -q also after the command (`beastflow fit -v SETTINGS`), as users type them
    for p in sub.choices.values():
        _verbosity(p, argparse.SUPPRESS)
    return parser


def _verbosity(p: argparse.ArgumentParser, default) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="beastflow's own debug messages (other libraries stay quiet)",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="warnings and errors only; no progress bars"
    )


#: loggers of this project; everything else (matplotlib, httpx, websockets, numba ...) stays at WARNING
OWN_LOGGERS = ("beastflow", "deployments")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Our loggers at DEBUG (-v), INFO (default) or WARNING (-q); third-party loggers at WARNING,
    so -v shows beastflow's debug lines, not thousands of library lines."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"beastflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line (traceback with -v)
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"beastflow {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
