"""Generation: a key/value-cached decoder, host-side sampling, batched `Generator`; the same
host loop over exported MindIR graphs in `mindxh.generate.mindir`."""
from mindxh.generate.generator import (
    BatchGenerator,
    Completion,
    GenerationError,
    GenerationStats,
    Generator,
    StepBackend,
)
from mindxh.generate.sampling import SamplingConfig

__all__ = ["BatchGenerator", "Completion", "GenerationError", "GenerationStats", "Generator",
           "SamplingConfig", "StepBackend"]
