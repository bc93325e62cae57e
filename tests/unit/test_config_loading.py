"""Config precedence, environment variables, provenance and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config
from edge.config.loading import environment_layer
from edge.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def system_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "config.yaml",
        "device:\n  site: plant-a\n  name: from-system\nuplink:\n  host: broker.system\n"
        "  port: 1884\n  keepalive_s: 40\n",
    )


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    return write(tmp_path / "site.yaml", "uplink:\n  host: broker.site\n  port: 1885\n")


def test_defaults_apply_when_no_source_sets_anything(tmp_path: Path) -> None:
    loaded = load_config(environ={}, system_file=tmp_path / "absent.yaml")
    assert loaded.config.uplink.port == 1883
    assert loaded.config.cache.retention_hours == 72
    assert loaded.files_read == ()
    assert loaded.origin_of("uplink.port") == "default"


def test_each_source_overrides_the_one_below(system_file: Path, site_file: Path) -> None:
    loaded = load_config(
        system_file=system_file,
        site_file=site_file,
        environ={"MOLTBOT_UPLINK__PORT": "1886"},
    )
    config = loaded.config
    assert config.device.site == "plant-a"  # system file only
    assert config.uplink.host == "broker.site"  # site file beats system file
    assert config.uplink.port == 1886  # environment beats both
    assert config.uplink.keepalive_s == 40
    assert config.uplink.protocol == "5"  # nobody set it: default
    assert loaded.origin_of("device.site") == str(system_file)
    assert loaded.origin_of("uplink.host") == str(site_file)
    assert loaded.origin_of("uplink.port") == "MOLTBOT_UPLINK__PORT"
    assert loaded.origin_of("uplink.protocol") == "default"
    assert loaded.files_read == (system_file, site_file)


def test_config_option_replaces_the_system_file(tmp_path: Path, system_file: Path) -> None:
    other = write(tmp_path / "other.yaml", "uplink:\n  port: 2000\n")
    loaded = load_config(config_file=other, system_file=system_file, environ={})
    assert loaded.config.uplink.port == 2000
    assert loaded.config.device.site == "default"  # the system file was not read


def test_moltbot_config_variable_names_the_config_file(tmp_path: Path) -> None:
    other = write(tmp_path / "other.yaml", "uplink:\n  port: 2001\n")
    loaded = load_config(environ={"MOLTBOT_CONFIG": str(other)}, system_file=tmp_path / "x")
    assert loaded.config.uplink.port == 2001


def test_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=tmp_path / "missing.yaml", environ={})


def test_nested_environment_variables_reach_any_depth(tmp_path: Path) -> None:
    environ = {
        "MOLTBOT_UPLINK__TLS__ENABLED": "true",
        "MOLTBOT_CACHE__PRIORITIES__DEFECT": "99",
        "MOLTBOT_TRIGGERS__CLASS_THRESHOLDS": '{"scratch": 0.7}',
        "MOLTBOT_VOICE__INTENTS": '{"go": {"phrases": ["go"], "action": "start_inspection"}}',
        "UNRELATED": "ignored",
    }
    config = load_config(environ=environ, system_file=tmp_path / "x").config
    assert config.uplink.tls.enabled is True
    assert config.cache.priorities == {"defect": 99}  # a map replaces the default map
    assert config.triggers.class_thresholds == {"scratch": 0.7}
    assert list(config.voice.intents) == ["go"]


def test_maps_from_two_sources_merge_key_by_key(tmp_path: Path) -> None:
    system = write(tmp_path / "s.yaml", "cache:\n  priorities:\n    defect: 5\n    voice: 4\n")
    environ = {"MOLTBOT_CACHE__PRIORITIES__DEFECT": "50"}
    loaded = load_config(config_file=system, environ=environ)
    assert loaded.config.cache.priorities == {"defect": 50, "voice": 4}
    assert loaded.origin_of("cache.priorities.voice") == str(system)
    assert loaded.origin_of("cache.priorities.defect") == "MOLTBOT_CACHE__PRIORITIES__DEFECT"


def test_environment_layer_records_the_variable_of_each_leaf() -> None:
    tree, origins = environment_layer({"MOLTBOT_API__PORT": "9000", "MOLTBOT_CONFIG": "/x"})
    assert tree == {"api": {"port": "9000"}}
    assert origins == {"api.port": "MOLTBOT_API__PORT"}


def test_bad_value_names_the_file_the_field_and_what_is_allowed(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "inference:\n  backend: cuda\nuplink:\n  port: 70000\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file=bad, environ={})
    message = str(caught.value)
    assert f"{bad}: inference.backend" in message
    assert "'auto', 'ort-cpu', 'ort-gpu' or 'tensorrt'" in message
    assert f"{bad}: uplink.port" in message
    assert "less than or equal to 65535" in message


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MOLTBOT_API__PORT: api\.port"):
        load_config(environ={"MOLTBOT_API__PORT": "eighty"}, system_file=tmp_path / "x")


def test_unknown_setting_is_refused_with_its_path(tmp_path: Path) -> None:
    bad = write(tmp_path / "typo.yaml", "uplink:\n  hots: broker\n")
    with pytest.raises(ConfigError, match=r"uplink\.hots: unknown setting; did you mean 'host'"):
        load_config(config_file=bad, environ={})


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    bad = write(tmp_path / "broken.yaml", "uplink:\n  port: [1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file=bad, environ={})
    assert caught.value.where is not None
    assert caught.value.where.startswith(f"{bad}:3:")


def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    bad = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(config_file=bad, environ={})


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.yaml", "")
    assert load_config(config_file=empty, environ={}).config.uplink.port == 1883


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "secret.yaml", "uplink:\n  password: [zebra-7731]\n")
    with pytest.raises(ConfigError, match=r"uplink\.password") as caught:
        load_config(config_file=bad, environ={})
    assert "zebra-7731" not in str(caught.value)


def test_broken_json_in_environment_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MOLTBOT_CACHE__PRIORITIES starts like JSON"):
        load_config(environ={"MOLTBOT_CACHE__PRIORITIES": "{bad"}, system_file=tmp_path / "x")


def test_debounce_hits_cannot_exceed_window(tmp_path: Path) -> None:
    bad = write(tmp_path / "t.yaml", "triggers:\n  debounce_hits: 5\n  debounce_window: 3\n")
    with pytest.raises(ConfigError, match="debounce_hits"):
        load_config(config_file=bad, environ={})


def test_paths_default_under_the_data_dir(tmp_path: Path) -> None:
    environ = {"MOLTBOT_DEVICE__DATA_DIR": str(tmp_path)}
    paths = load_config(environ=environ, system_file=tmp_path / "x").config.paths()
    assert paths.model_dir == tmp_path / "models"
    assert paths.outbox_dir == tmp_path / "outbox"
    assert paths.vosk_model_dir == tmp_path / "vosk-model"
