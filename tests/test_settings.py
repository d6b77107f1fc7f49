import tomllib

import pytest

from beastflow.cli.setup import template_text
from beastflow.settings import Settings, SettingsError, load_settings, settings_from_dict


def _keys(model_cls, prefix=""):
    out = set()
    for name, field in model_cls.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out |= _keys(ann, prefix + name + ".")
        else:
            out.add(prefix + name)
    return out


def _template_keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        if (
            isinstance(v, dict)
            and prefix + k not in {"project.storage_options", "physics.stellar_library.files"}
            and not prefix.startswith("physics.priors")
        ):
            sub = _template_keys(v, prefix + k + ".")
            out |= sub if sub or v else {prefix + k}
        else:
            out.add(prefix + k)
    return out


def test_template_loads_and_matches_defaults():
    data = tomllib.loads(template_text())
    s = settings_from_dict(data)
    assert s.model_dump() == Settings().model_dump()


def test_template_documents_every_key():
    text = template_text()
    missing = [k for k in _keys(Settings) if k.rsplit(".", 1)[-1] not in text]
    assert not missing, f"settings template lacks keys {missing}"


def test_unknown_key_named(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[physics]\nfilterz = ['HST_WFC3_F275W']\n")
    with pytest.raises(SettingsError, match=r"physics\.filterz: unknown key"):
        load_settings(str(f))


def test_wrong_type_named():
    with pytest.raises(SettingsError, match=r"physics\.n_subgrid"):
        settings_from_dict({"physics": {"n_subgrid": "ten"}})
    with pytest.raises(SettingsError, match=r"physics\.velocity"):
        settings_from_dict({"physics": {"velocity": "fast"}})


@pytest.mark.parametrize(
    "section,msg",
    [
        (
            {"physics": {"extinction": {"avs": [2.0, 1.0, 0.1]}}},
            r"physics\.extinction\.avs.*min \(2\.0\) is larger than max",
        ),
        ({"physics": {"isochrones": {"logt": [6.0, 7.0]}}}, r"physics\.isochrones\.logt"),
        ({"physics": {"isochrones": {"z": []}}}, r"physics\.isochrones\.z.*must not be empty"),
        ({"physics": {"filters": ["HST_WFC3_F999W"]}}, r"unknown filter \['HST_WFC3_F999W'\]"),
        ({"physics": {"priors": {"mass": {"name": "chabrier"}}}}, r"unknown mass prior 'chabrier'"),
        ({"physics": {"priors": {"av": {"name": "lognormal", "mean": 1.0}}}}, r"needs 'sigma'"),
        ({"physics": {"extinction": {"rvs": [0.5, 6.0, 0.5]}}}, r"R\(V\) must lie in \[1, 7\]"),
        ({"compat": "beast-2.0"}, r"compat"),
    ],
)
def test_bad_values_name_key(section, msg):
    with pytest.raises(SettingsError, match=msg):
        settings_from_dict(section)


def test_relative_paths_resolved_against_file(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "s.toml"
    f.write_text('[project]\noutput = "out"\n[observations]\ncatalog = "cat.fits"\n')
    s = load_settings(str(f))
    assert s.project.output == str(tmp_path / "sub" / "out")
    assert s.observations.catalog == str(tmp_path / "sub" / "cat.fits")


def test_invalid_toml_names_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[physics\n")
    with pytest.raises(SettingsError, match="bad.toml: not valid TOML"):
        load_settings(str(f))


def test_section_hash_changes_only_with_section():
    a = Settings()
    b = settings_from_dict({"fit": {"lnp_npts": 10}})
    assert a.section_hash("physics") == b.section_hash("physics")
    assert a.section_hash("fit") != b.section_hash("fit")


@pytest.mark.parametrize(
    "section,msg",
    [
        (
            {"physics": {"stellar_library": {"files": {"kurucz": "k.fits"}}}},
            r"files: a file is given for \['kurucz'\], which libraries = \['atlas9', 'planck'\] does not list",
        ),
        ({"physics": {"stellar_library": {"download": True}}}, r"download = true, but libraries"),
        ({"physics": {"extinction": {"a_law": "G23"}}}, r"a_law = 'G23': not used with law = 'gordon16'"),
        ({"physics": {"extinction": {"law": "single", "fAs": [0.0, 1.0, 0.5]}}}, r"fAs.*not used with law = 'single'"),
        (
            {"noise_model": {"model": "trunchen", "n_flux_bins": 20}},
            r"n_flux_bins = 20: not used with model = 'trunchen'",
        ),
        ({"noise_model": {"trunchen_k": 5}}, r"trunchen_k = 5: not used with model = 'toothpick'"),
    ],
)
def test_keys_the_chosen_options_never_read_are_refused(section, msg):
    with pytest.raises(SettingsError, match=msg):
        settings_from_dict(section)


def test_template_with_other_options_still_validates(tmp_path):
    # the template writes every key at its default: switching an option must not trip the unused-key check
    text = (
        template_text()
        .replace('model = "toothpick"', 'model = "splinter"')
        .replace('law = "gordon16"', 'law = "single"', 1)
    )
    f = tmp_path / "s.toml"
    f.write_text(text)
    s = load_settings(str(f))
    assert s.noise_model.model == "splinter" and s.physics.extinction.law == "single"


# ----------------------------------------------------------------------------------------------
# names and paths that would leave the output (issue 12, item 2)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "", ".hidden", "a\\b", "x..y"])
def test_project_name_must_be_a_plain_prefix(name):
    with pytest.raises(SettingsError, match=r"project\.name: .*plain file-name prefix"):
        settings_from_dict({"project": {"name": name}})


@pytest.mark.parametrize("output", ["", "  ", "/", "s3://", "s3:///"])
def test_project_output_must_name_a_folder(output):
    with pytest.raises(SettingsError, match=r"project\.output"):
        settings_from_dict({"project": {"output": output}})


def test_output_is_absolute_once_loaded(tmp_path, monkeypatch):
    """A relative output (or the default) names one folder, whatever directory a process later runs in."""
    monkeypatch.chdir(tmp_path)
    assert Settings().output == str(tmp_path / "beastflow-output")
    s = settings_from_dict({"project": {"output": "run"}})
    monkeypatch.chdir("/")
    assert s.output == str(tmp_path / "run")
    assert settings_from_dict(s.model_dump(mode="json")).output == str(tmp_path / "run")
    assert settings_from_dict({"project": {"output": "s3://b/run"}}).output == "s3://b/run"


def test_empty_output_in_a_file_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[project]\noutput = ""\n')
    with pytest.raises(SettingsError, match=r"project\.output: .*empty"):
        load_settings(str(f))


def test_artifact_names_cannot_leave_the_output(tmp_path):
    s = settings_from_dict({"project": {"output": str(tmp_path / "out"), "name": "field"}})
    assert s.artifact("field_stats.parquet") == str(tmp_path / "out" / "field_stats.parquet")
    with pytest.raises(ValueError, match="outside the run's output root"):
        s.artifact("..", "..", "escape_sourceden_map.parquet")


# ----------------------------------------------------------------------------------------------
# no credential in a settings file (issue 12, item 3)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts",
    [
        {"s3": {"endpoint_url": "http://127.0.0.1:9", "key": "AKIA", "secret": "planted-secret"}},
        {"s3": {"client_kwargs": {"aws_secret_access_key": "planted-secret"}}},
        {"s3": {"token": "planted-secret"}},
        {"abfs": {"account_key": "planted-secret"}},
    ],
)
def test_credentials_in_storage_options_are_refused(tmp_path, opts):
    import tomli_w

    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({"project": {"storage_options": opts}}))
    with pytest.raises(SettingsError, match=r"project\.storage_options: .*credentials do not belong") as err:
        load_settings(str(f))
    assert "planted-secret" not in str(err.value)  # the message names the key, never the value


def test_non_secret_storage_options_are_accepted():
    s = settings_from_dict(
        {
            "project": {
                "storage_options": {
                    "s3": {
                        "endpoint_url": "http://127.0.0.1:9000",
                        "profile": "survey",
                        "sse_kms_key_id": "arn:aws:kms:x",
                    }
                }
            }
        }
    )
    assert s.project.storage_options["s3"]["profile"] == "survey"


def test_section_hash_names_run_files_by_their_place_in_the_output(tmp_path):
    """A run folder copied elsewhere keeps its cache keys: a catalog inside the output is
    hashed by its relative name (its content is hashed as a unit input); one outside is not."""
    keys = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        s = settings_from_dict({"project": {"output": str(out)}, "observations": {"catalog": str(out / "cat.parquet")}})
        keys.append(s.section_hash("observations"))
    assert keys[0] == keys[1]
    other = settings_from_dict(
        {"project": {"output": str(tmp_path / "a")}, "observations": {"catalog": str(tmp_path / "x.parquet")}}
    )
    assert other.section_hash("observations") != keys[0]
