"""The BEAST side: running the peer harness, its run folder, reading its HDF5 grids."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .common import PEER_DIR, log

# ------------------------------------------------------------------ BEAST side


def run_peer(args, peer_run: Path) -> None:
    env = dict(os.environ, PEER_HOME=str(args.peer_home), WORKDIR=str(peer_run))
    if not args.no_setup:
        print(f"[peer] setup.sh (PEER_HOME={args.peer_home})", flush=True)
        subprocess.run(["bash", str(PEER_DIR / "setup.sh")], env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = ["bash", str(PEER_DIR / "run.sh"), args.grid, str(args.nstars)] + (
        ["--noise", "splinter"] if args.noise == "splinter" else []
    )
    print(f"[peer] {' '.join(cmd)}  -> {peer_run}", flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"the BEAST run failed (exit {r.returncode}); logs in {peer_run}/timing/")


def retime_beast_fit(args, peer: Peer, times: int) -> list[float]:
    """Run BEAST's fit stage again (same harness call, one core) and return its star-loop
    times: BEAST and beastflow are then timed close together on a shared machine."""
    py = args.peer_home / "venv" / "bin" / "python"
    env = dict(
        os.environ,
        PEER_HOME=str(args.peer_home),
        BEAST_LIBS=str(args.peer_home / "libs") + "/",
        PYTHONDONTWRITEBYTECODE="1",
    )
    out = []
    for _ in range(times):
        r = subprocess.run(
            [str(py), str(PEER_DIR / "beast_peer.py"), "fit", "--workdir", str(peer.run)],
            env=env,
            cwd=peer.run,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            log.warning("BEAST fit re-run failed: %s", r.stderr[-2000:])
            break
        info = json.loads((peer.run / "stage_info.json").read_text()).get("fit", {})
        out.append(float(info["fit_loop_s"]))
    return out


class Peer:
    """The files and timings of one peer-beast run folder."""

    def __init__(self, run: Path):
        self.run = run
        rep = json.loads((run / "peer_report.json").read_text())
        self.config = rep["config"]
        self.stages = {s["stage"]: s for s in rep["stages"]}
        bad = [s for s, v in self.stages.items() if v.get("exit") != 0]
        if bad:
            raise SystemExit(f"{run}: BEAST stages {bad} failed; rerun the peer")
        self.project = self.config["project"]
        self.settings_text = (run / "beast_settings.txt").read_text()

    def path(self, suffix: str) -> Path:
        return self.run / self.project / f"{self.project}_{suffix}"

    def setting(self, name: str, default: Any = None) -> Any:
        m = re.search(rf"^{re.escape(name)}\s*=\s*(.+)$", self.settings_text, re.M)
        if not m:
            return default
        rhs = m.group(1).strip()
        if rhs.startswith(("[", "{", "'", '"')) or re.fullmatch(r"-?[\d.eE+]+", rhs):
            return ast.literal_eval(rhs)
        m2 = re.match(r"(-?[\d.eE+]+)\s*\*", rhs)  # e.g. "-300 * units.km / units.s"
        return float(m2.group(1)) if m2 else default

    def wall(self, *stages: str) -> float | None:
        try:
            return float(sum(self.stages[s]["wall_s"] for s in stages))
        except KeyError:
            return None


def read_beast_grid(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        g = f["grid"][...]
        filters = f["grid"].attrs["filters"]
        filters = (filters.decode() if isinstance(filters, bytes) else str(filters)).split()
        cols = {c: g[c].astype(np.int64 if c == "fullgrid_idx" else np.float64) for c in g.dtype.names}
        return filters, f["lamb"][...], f["seds"][...], cols


def read_beast_noise(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in ("bias", "error", "completeness")}


def beast_vega(peer: Peer, filters: list[str]) -> np.ndarray | None:
    p = Path(peer.config.get("stellib", "")).parent / "vega.hd5"
    if not p.exists():
        return None
    with h5py.File(p, "r") as f:
        sed = f["sed"][...]
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in sed["FNAME"]]
    return np.array([sed["LUM"][names.index(n)] for n in filters], dtype=np.float64)
