"""Checkpoints: crash-safe files on disk (`store`) and a model + tokenizer + recipe back from
them (`inference`). Used by training, GRPO, generation, evaluation, export and the pipeline.
"""
