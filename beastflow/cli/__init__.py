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

# area modules, in the order their commands appear in --help
_AREAS = ["setup", "physics", "observations", "noise", "fit", "run", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beastflow",
        description="The BEAST (Bayesian Extinction And Stellar Tool) as a resumable dataflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        try:
            mod = importlib.import_module(f"beastflow.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"beastflow.cli.{area}":
                continue  # that stage is not installed in this build
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from beastflow.cli.errors import one_line

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
