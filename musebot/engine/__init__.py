"""The inference engine: ONNX Runtime + numpy, no torch (the real-time path imports nothing heavier)."""

from musebot.engine.engine import Engine, EngineStateError, ModelLoadError
from musebot.engine.masks import ConstraintError, Constraints, MaskTable
from musebot.engine.sampling import SamplerSettings

__all__ = [
    "ConstraintError", "Constraints", "Engine", "EngineStateError", "MaskTable", "ModelLoadError",
    "SamplerSettings",
]
