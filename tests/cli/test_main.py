"""The console script's manners: --version, -v / -q and what they let through."""

from __future__ import annotations

import logging

import pytest

from beastflow.cli import OWN_LOGGERS, build_parser, main


@pytest.fixture(autouse=True)
def _restore_levels():
    names = ["", *OWN_LOGGERS, "matplotlib", "httpcore"]
    before = {n: logging.getLogger(n).level for n in names}
    yield
    for n, lvl in before.items():
        logging.getLogger(n).setLevel(lvl)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    import beastflow

    out = capsys.readouterr().out.strip()
    assert out == f"beastflow {beastflow.__version__}" and out.split()[1][0].isdigit()


@pytest.mark.parametrize(
    "argv, level",
    [
        (["export", "nowhere"], logging.INFO),
        (["-v", "export", "nowhere"], logging.DEBUG),
        (["export", "-v", "nowhere"], logging.DEBUG),  # also after the command
        (["-q", "export", "nowhere"], logging.WARNING),
        (["export", "nowhere", "-q"], logging.WARNING),
    ],
)
def test_verbosity_applies_to_beastflow_loggers_only(argv, level, capsys):
    assert main(argv) == 1  # no such folder: one error line
    assert "no such output folder" in capsys.readouterr().err
    for name in OWN_LOGGERS:
        assert logging.getLogger(name).level == level
    # -v must not open the floodgates of matplotlib / httpcore / websockets debug output
    assert logging.getLogger("matplotlib.font_manager").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore.connection").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("beastflow.fit.fitting").isEnabledFor(logging.DEBUG) == (level == logging.DEBUG)


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-v", "-q", "report", "x"])
    assert "not allowed with" in capsys.readouterr().err


def test_ui_link_only_with_a_configured_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from beastflow.cli.run import ui_link

    with temporary_settings({PREFECT_API_URL: None}):
        assert ui_link("abc") is None  # the temporary in-process API has no UI to go back to
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        assert ui_link("abc") == "http://127.0.0.1:4321/runs/flow-run/abc"
        assert ui_link(None) is None


def test_run_inputs_artifact_never_holds_credentials():
    from beastflow.flows.progress import without_userinfo

    assert without_userinfo("s3://AKIAXXXX:s3cr3t@bucket/field.toml") == "s3://bucket/field.toml"
    assert without_userinfo("/data/a@b/field.toml") == "/data/a@b/field.toml"
