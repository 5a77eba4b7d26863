"""Exceptions that mean "the user's input is wrong", shown as one line, not a traceback."""
from mindxh.config import RecipeError
from mindxh.generate.generator import GenerationError
from mindxh.pipeline.runner import PipelineError
from mindxh.rewards.jsonl import JsonlError
from mindxh.train.checkpoint import CheckpointError
from mindxh.train.runtime import LaunchError
from mindxh.train.trainer import TrainingError

USER_ERRORS = (RecipeError, GenerationError, PipelineError, CheckpointError, LaunchError,
               TrainingError, FileNotFoundError,
               JsonlError)
