"""Generation: a key/value-cached decoder, host-side sampling, batched `Generator`."""
from mindxh.generate.generator import (
    Completion,
    GenerationError,
    GenerationStats,
    Generator,
)
from mindxh.generate.sampling import SamplingConfig

__all__ = ["Completion", "GenerationError", "GenerationStats", "Generator", "SamplingConfig"]
