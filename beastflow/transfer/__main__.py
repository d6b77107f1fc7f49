"""``python -m beastflow.transfer login --token-file FILE``: store a Globus refresh token.

Run once on the machine that will start the pipeline (a cluster login node);
the file must stay outside the run's output folder.  The native app's id comes
from --client-id or $GLOBUS_CLIENT_ID.
"""

from __future__ import annotations

import argparse
import os
import sys

from .globus import login


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beastflow.transfer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("login", help="log in to Globus and store a refresh token for unattended transfers")
    p.add_argument("--token-file", required=True, help="globus-sdk JSON token storage to write (mode 0600)")
    p.add_argument("--client-id", help="your registered Globus native app (default: $GLOBUS_CLIENT_ID)")
    p.add_argument(
        "--mapped-collection",
        action="append",
        default=[],
        metavar="ID",
        help="a GCS v5 mapped collection to consent to (repeatable): the cluster's scratch collection",
    )
    args = parser.parse_args(argv)
    login(os.path.expanduser(args.token_file), args.client_id, tuple(args.mapped_collection))
    return 0


if __name__ == "__main__":
    sys.exit(main())
