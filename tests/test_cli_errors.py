"""Every failure of a command ends in one line naming the file or setting (issue 12, item 10).

The traceback is printed only with ``-v``.
"""

from __future__ import annotations

import numpy as np

from beastflow.cli import main
from beastflow.cli.errors import one_line
from beastflow.filters import short_names
from beastflow.settings import Settings

FILTERS = Settings().physics.filters


def _catalog_columns(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    cols = {"RA": 10.0 + rng.random(n) * 0.01, "DEC": 41.0 + rng.random(n) * 0.01}
    for b in short_names(FILTERS):
        cols[f"{b}_RATE"] = rng.random(n) * 1e-8
        cols[f"{b}_VEGA"] = np.full(n, 22.0)
        cols[f"{b}_FLAG"] = np.zeros(n, np.int16)
    return cols


def _settings(tmp_path, catalog: str, output: str = "out") -> str:
    f = tmp_path / "field.toml"
    f.write_text(f'[project]\nname = "f"\noutput = "{output}"\n\n[observations]\ncatalog = "{catalog}"\n')
    return str(f)


def _run(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def test_truncated_fits_catalog_is_one_line_naming_the_file(tmp_path, capsys):
    from astropy.table import Table

    path = tmp_path / "phot.fits"
    Table(_catalog_columns(269)).write(path, format="fits")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])  # cut into the table data
    rc, err = _run(["density-map", _settings(tmp_path, str(path))], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and "truncated" in lines[0]


def test_corrupt_parquet_catalog_is_one_line_and_traceback_only_with_v(tmp_path, capsys):
    path = tmp_path / "phot.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 50 + b"PAR1")
    settings = _settings(tmp_path, str(path))
    rc, err = _run(["density-map", settings], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(path) in err, err
    rc, err = _run(["-v", "density-map", settings], capsys)
    assert rc == 1 and "Traceback" in err and str(path) in err.strip().splitlines()[-1]


def test_unwritable_output_is_one_line_naming_the_path(tmp_path, capsys):
    import polars as pl

    cat = tmp_path / "phot.parquet"
    pl.DataFrame(_catalog_columns(50)).write_parquet(cat)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    rc, err = _run(["density-map", _settings(tmp_path, str(cat), output=str(blocker / "run"))], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(blocker) in err


def test_library_errors_are_named():
    from botocore.exceptions import ClientError

    denied = ClientError(
        {
            "Error": {
                "Code": "InvalidAccessKeyId",
                "Message": "The AWS Access Key Id you provided does not exist in our records.",
            }
        },
        "PutObject",
    )
    msg = one_line(denied)
    assert msg.startswith("S3 refused the request") and "AWS profile" in msg and "\n" not in msg
    timeout = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    assert "PREFECT_API_URL" in one_line(timeout)
    assert (
        one_line(PermissionError(13, "Permission denied", "/data/run/x.parquet"))
        == "/data/run/x.parquet: Permission denied"
    )
    assert one_line(KeyError("grid has no 'weight' column")) == "grid has no 'weight' column"


def test_invalid_settings_name_every_key_on_one_line(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("[execution]\nexecutor = 'cloud'\n[physics]\nn_subgrid = 'ten'\n")
    rc, err = _run(["density-map", str(f)], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "execution.executor" in err and "physics.n_subgrid" in err and str(f) in err
