"""Settings by reference (issue 12, item 3): round trip, tamper check, nothing of the output root inside."""

from __future__ import annotations

import json

import pytest

from beastflow.flows.settings_ref import by_reference, resolve
from beastflow.settings import Settings, SettingsError

from .conftest import with_execution, with_output


def test_reference_round_trip_and_tamper_check(tmp_path):
    s = with_execution(with_output(Settings(), str(tmp_path / "out")), retries=5)
    ref = by_reference(s)
    assert ref.startswith(f"settings-ref:{tmp_path / 'out'}#sha256=") and len(ref) < 300
    back = resolve(ref)
    assert back.model_dump() == s.model_dump() and back.execution.retries == 5
    (record,) = (tmp_path / "out" / ".beastflow" / "settings").iterdir()
    assert str(tmp_path / "out") not in record.read_text()  # relocatable: no output path inside
    assert by_reference(s) == ref  # content-addressed: written once
    body = json.loads(record.read_text())
    body["settings"]["execution"]["retries"] = 0
    record.write_text(json.dumps(body))
    with pytest.raises(SettingsError, match="does not match its hash"):
        resolve(ref)


def test_reference_to_moved_or_missing_settings(tmp_path):
    with pytest.raises(SettingsError, match="settings of this run are gone"):
        resolve(f"settings-ref:{tmp_path}#sha256={'0' * 64}")
    with pytest.raises(SettingsError, match="not a settings reference"):
        resolve("settings-ref:nothing")
