"""Build: Frame records -> the Hugging Face dataset folder (plan, splits, features, write, card, validate)."""
from .pipeline import BUILD_MARKER, MAX_SHARD_BYTES, BuildError, BuildResult, build

__all__ = ["BUILD_MARKER", "MAX_SHARD_BYTES", "BuildError", "BuildResult", "build"]
