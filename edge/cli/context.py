"""What every ``moltbot`` command gets: the global options and the config, loaded on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge.log_format import configure_logging

if TYPE_CHECKING:
    from edge.config import LoadedConfig


@dataclass
class CliState:
    """What the global options said; the config is loaded on first use only."""

    config_file: Path | None
    log_format: str | None
    log_level: str | None
    _loaded: LoadedConfig | None = field(default=None, repr=False)

    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            from edge.config import load_config  # noqa: PLC0415 - pydantic: only when needed

            self._loaded = load_config(config_file=self.config_file)
            logging_settings = self._loaded.config.logging
            configure_logging(
                self.log_format or logging_settings.format,  # type: ignore[arg-type]
                self.log_level or logging_settings.level,
            )
        return self._loaded
