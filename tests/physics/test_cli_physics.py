"""``beastflow physicsmodel`` on the template settings (embedded ATLAS9 default)."""

from __future__ import annotations

import re

from beastflow.cli import main
from beastflow.io.sed_grid import SEDGrid


def test_physicsmodel_on_template_settings(tmp_path, capsys):
    assert main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    toml = tmp_path / "beastflow.toml"
    assert main(["physicsmodel", str(toml)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"physics model: ([\d,]+) models in 1 SED grid", out)
    assert m, out
    n = int(m.group(1).replace(",", ""))
    grid_file = tmp_path / "beastflow-output" / "beastflow_seds.grid.hd5"
    assert grid_file.exists() and SEDGrid(str(grid_file)).n_models == n > 0
    for word in (
        "stellar library: atlas9 (Kurucz 1993 ATLAS9",
        "library coverage",
        "log age",
        "M_ini",
        "A(V)",
        "R(V)",
        "f_A",
        "distance [pc]",
        "Z",
        "MiB",
        "time",
        str(grid_file),
    ):
        assert word in out, word
    # rerun: up to date, nothing rebuilt
    assert main(["physicsmodel", str(toml)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_physicsmodel_bad_settings_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "b.toml"
    bad.write_text('[physics]\nfilters = ["NOPE_F999W"]\n')
    assert main(["physicsmodel", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "physics.filters" in err and "Traceback" not in err
