"""``beastflow init DIR``: write a commented settings template."""

from __future__ import annotations

import argparse
import os
from importlib import resources

from beastflow import storage


def template_text() -> str:
    return resources.files("beastflow.data").joinpath("settings_template.toml").read_text()


def cmd_init(args: argparse.Namespace) -> int:
    target = storage.join(args.dir, "beastflow.toml")
    if storage.exists(target) and not args.force:
        raise FileExistsError(f"{target} exists; use --force to overwrite it")
    storage.makedirs(args.dir)
    storage.write_bytes(target, template_text().encode())
    print(f"wrote {target}")
    shown = target if "://" in target else os.path.relpath(target)
    print(f"edit it, then run e.g.:  beastflow physicsmodel {shown}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write a commented settings template into DIR")
    p.add_argument("dir", help="folder (any fsspec URL) for beastflow.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing beastflow.toml")
    p.set_defaults(func=cmd_init)
