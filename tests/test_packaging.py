"""What gets installed: beastflow and its Prefect layer as beastflow.flows, nothing else at the top level."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _tree_packages(folder: Path, name: str) -> set[str]:
    """Every folder below ``folder`` that holds Python modules or data, as a dotted package name."""
    out = {name}
    for d in folder.rglob("*"):
        if d.is_dir() and d.name != "__pycache__" and not d.name.startswith("."):
            out.add(".".join([name, *d.relative_to(folder).parts]))
    return out


def test_every_package_of_the_tree_is_installed_and_flows_only_under_beastflow():
    st = _pyproject()["tool"]["setuptools"]
    assert st["package-dir"] == {"beastflow.flows": "flows"}
    expected = _tree_packages(REPO / "beastflow", "beastflow") | _tree_packages(REPO / "flows", "beastflow.flows")
    assert set(st["packages"]) == expected
    assert all(p == "beastflow" or p.startswith("beastflow.") for p in st["packages"])


def test_flows_import_as_beastflow_flows_from_the_flows_folder():
    spec = importlib.util.find_spec("beastflow.flows")
    assert spec is not None and Path(spec.origin).resolve() == REPO / "flows" / "__init__.py"


def test_license_is_an_spdx_expression():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"  # a string: the PEP 639 form, not a {text/file} table
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
