"""The one config model, how it is loaded, and how it is shown."""

from edge.config.loading import LoadedConfig, load_config
from edge.config.model import MoltbotConfig, ResolvedPaths

__all__ = ["LoadedConfig", "MoltbotConfig", "ResolvedPaths", "load_config"]
