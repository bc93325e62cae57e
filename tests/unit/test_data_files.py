"""``edge.files.load_data_file``: a YAML or JSON file → a pydantic model, or our typed error
saying what is wrong, where (file, line:column, field) and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from edge.config import load_config
from edge.errors import ConfigError, InputError
from edge.files import load_data_file, read_data_file


class SampleError(InputError):
    """The error these tests ask the loader to raise."""


class Lens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    focal_mm: float = Field(gt=0)


class Camera(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    lenses: list[Lens]


def load(path: Path) -> Camera:
    return load_data_file(
        path,
        Camera,
        error=SampleError,
        what="camera file",
        hint="compare it with the example",
        missing_hint="cameras live in cameras/",
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_yaml_file_becomes_the_model(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.yaml", "name: top\nlenses:\n  - focal_mm: 8\n")
    assert load(path) == Camera(name="top", lenses=[Lens(focal_mm=8)])


def test_a_file_named_json_is_read_as_json(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.json", '{"name": "top", "lenses": []}')
    assert load(path) == Camera(name="top", lenses=[])


def test_a_missing_file_names_the_path_and_the_callers_hint(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="no camera file found") as caught:
        load(tmp_path / "nope.yaml")
    assert caught.value.where == str(tmp_path / "nope.yaml")
    assert caught.value.hint == "cameras live in cameras/"


def test_a_folder_in_place_of_the_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "cam.yaml").mkdir()
    with pytest.raises(SampleError, match="cannot read camera file") as caught:
        load(tmp_path / "cam.yaml")
    assert caught.value.where == str(tmp_path / "cam.yaml")


def test_a_file_that_is_not_utf8_names_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_bytes(b"name: \xff\n")
    with pytest.raises(SampleError, match=r"not UTF-8 text \(byte 6 is 0xff\)") as caught:
        load(path)
    assert "UTF-8" in (caught.value.hint or "")


def test_bad_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.yaml", "name: top\nlenses: [\n")
    with pytest.raises(SampleError, match="camera file is not valid YAML") as caught:
        load(path)
    assert caught.value.where is not None
    assert caught.value.where.startswith(f"{path}:3:")
    assert "YAML syntax" in (caught.value.hint or "")


def test_bad_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.json", '{\n  "name": "top",\n  "lenses": [,]\n}\n')
    with pytest.raises(
        SampleError, match="camera file is not valid JSON: Expecting value"
    ) as caught:
        load(path)
    assert caught.value.where == f"{path}:3:14"
    assert "JSON syntax" in (caught.value.hint or "")


def test_a_schema_error_names_every_bad_field_by_its_path(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.yaml", "lenses:\n  - focal_mm: 8\n  - focal_mm: -1\n")
    with pytest.raises(SampleError) as caught:
        load(path)
    assert caught.value.what == (
        "camera file is invalid: name: Field required; "
        "lenses.1.focal_mm: Input should be greater than 0"
    )
    assert caught.value.where == str(path)
    assert caught.value.hint == "compare it with the example"


def test_a_file_that_is_not_a_mapping_is_refused_at_the_top_level(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.yaml", "- a\n- b\n")
    with pytest.raises(SampleError, match="camera file is invalid: <top level>: "):
        load(path)


def test_a_value_pyyaml_cannot_build_is_our_error_not_a_value_error(tmp_path: Path) -> None:
    path = write(tmp_path / "cam.yaml", "name: 2024-13-45\nlenses: []\n")
    with pytest.raises(SampleError, match=r"month must be in 1\.\.12") as caught:
        load(path)
    assert "quote" in (caught.value.hint or "")


def test_a_config_file_with_an_impossible_date_is_a_config_error(tmp_path: Path) -> None:
    """Was a ValueError traceback: PyYAML turns 2024-13-45 into a date and fails."""
    site = write(tmp_path / "site.yaml", "device:\n  name: 2024-13-45\n")
    with pytest.raises(ConfigError, match="config file is not valid YAML"):
        load_config(site_file=site, environ={}, system_file=tmp_path / "none.yaml")


@pytest.mark.parametrize(
    ("name", "text"), [("deep.json", "[" * 100_000), ("deep.yaml", "[" * 5000)]
)
def test_nesting_too_deep_to_parse_is_our_error(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, text + "]" * len(text))
    with pytest.raises(SampleError, match="nests too deeply"):
        read_data_file(path, error=SampleError, what="camera file")
