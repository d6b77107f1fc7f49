"""The parts of ``bench/compare_beast.py`` (beastflow in compat mode against BEAST 2.1.0).

``peer``: running the reference BEAST and reading its run folder; ``convert``:
beastflow's settings and inputs from the peer's exact inputs, BEAST grids in
beastflow's formats; ``stages``: each beastflow stage run, timed and compared;
``checks``: stage outputs compared file to file; ``metrics``: the pure
arithmetic of every agreement figure (tested in the default suite);
``effects``: the default mode against compat; ``report``: the printed tables.
``compare_beast.py`` keeps the command line and the order the stages run in.
"""
