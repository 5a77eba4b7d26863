"""Recipes: YAML files resolved into typed, validated config objects."""
from mindxh.config.loader import (
    RecipeError,
    load_recipe,
    load_recipe_text,
    recipe_to_dict,
    recipe_to_yaml,
)
from mindxh.config.scale import ClusterConfig, CompileConfig, ParallelConfig, PrecisionConfig
from mindxh.config.schema import (
    DataConfig,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    TokenizerConfig,
    TrainConfig,
)

__all__ = ["RecipeError", "load_recipe", "load_recipe_text", "recipe_to_dict", "recipe_to_yaml",
           "Recipe", "ModelConfig", "TokenizerConfig", "DataConfig", "OptimConfig", "TrainConfig",
           "CompileConfig", "ParallelConfig", "PrecisionConfig", "ClusterConfig", "MetricsConfig"]
