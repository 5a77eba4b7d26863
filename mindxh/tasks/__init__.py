"""Tasks: the problems a model is trained and judged on, with their splits and rewards.

One task module is shared by SFT (worked solutions), GRPO (problems + reward), evaluation
(held-out accuracy) and the pipeline, so a split or a reward is defined in exactly one place.
Tasks know no model: accuracy takes any object with a `greedy(prompts, max_new_tokens)`
method (`mindxh.generate.Generator` is one).
"""
