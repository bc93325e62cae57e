"""Where the builder finds the repository's files: it runs from a checkout of this repo."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The balena fleet project's templates (Dockerfile.template, entrypoint.sh, README).
BALENA_TEMPLATES = REPO_ROOT / "balena"
