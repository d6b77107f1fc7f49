"""CPU time of BEAST 2.1.0's own call in one peer-beast stage (run by the PEER's interpreter).

    PEER_HOME/venv/bin/python bench/peer_cpu_time.py seds|fit PEER_RUN_DIR PEER_DIR

Runs ``PEER_DIR/beast_peer.py STAGE --workdir PEER_RUN_DIR`` in this process,
unchanged, with BEAST's function of that stage wrapped in a CPU clock:
``make_extinguished_sed_grid`` (seds: dust grid -> extinguished SED grid
written) or ``summary_table_memory`` (fit: bins, star loop, outputs written;
the grid is loaded before it).  Prints one JSON line ``{"cpu_s", "wall_s"}``.
Imports, settings parsing and grid loading stay outside the clock, as they
do for beastflow's side in bench/compare_speed.py.  beastflow never imports
this file or BEAST: it is run with the peer venv's python (compare_speed.py).
"""

import importlib
import json
import sys
import time

#: stage -> (module, function) whose CPU time is the stage's cost
TIMED = {
    "seds": ("beast.physicsmodel.model_grid", "make_extinguished_sed_grid"),
    "fit": ("beast.fitting.fit", "summary_table_memory"),
}


def main() -> None:
    stage, run_dir, peer_dir = sys.argv[1:4]
    mod_name, fn_name = TIMED[stage]
    mod = importlib.import_module(mod_name)
    original = getattr(mod, fn_name)
    spent = {}

    def clocked(*a, **kw):
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            spent["cpu_s"] = time.process_time() - c0
            spent["wall_s"] = time.perf_counter() - w0

    # beast_peer imports the function inside each stage function, from the
    # module: the module attribute is what it finds
    setattr(mod, fn_name, clocked)
    sys.path.insert(0, peer_dir)
    import beast_peer

    sys.argv = ["beast_peer.py", stage, "--workdir", run_dir]
    beast_peer.main()
    if "cpu_s" not in spent:
        raise SystemExit(f"{mod_name}.{fn_name} was not called by beast_peer.py {stage}")
    print(json.dumps(spent))


if __name__ == "__main__":
    main()
