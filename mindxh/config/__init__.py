"""Recipes: YAML files resolved into typed, validated config objects."""
from mindxh.config.loader import (
                                  RecipeError,
                                  load_recipe,
                                  load_recipe_text,
                                  recipe_to_dict,
                                  recipe_to_yaml,
)
from mindxh.config.schema import (
                                  CompileConfig,
                                  DataConfig,
                                  MetricsConfig,
                                  ModelConfig,
                                  OptimConfig,
                                  ParallelConfig,
                                  Recipe,
                                  TokenizerConfig,
                                  TrainConfig,
)

__all__ = ["RecipeError", "load_recipe", "load_recipe_text", "recipe_to_dict", "recipe_to_yaml", "Recipe",
           "ModelConfig", "TokenizerConfig", "DataConfig", "OptimConfig", "TrainConfig",
           "CompileConfig", "ParallelConfig", "MetricsConfig"]
