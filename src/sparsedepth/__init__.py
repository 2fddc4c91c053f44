"""SparseDepth: per-token dynamic depth with hard skipping, and the routers it is compared against."""

from .config import ConfigError, ModelConfig
from .model import ModelOutput, SparseDepthModel, build_model
from .routing import ROUTERS, Decision, Router

__all__ = [
    "ROUTERS",
    "ConfigError",
    "Decision",
    "ModelConfig",
    "ModelOutput",
    "Router",
    "SparseDepthModel",
    "build_model",
]
__version__ = "0.1.0"
