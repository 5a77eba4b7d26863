"""Tasks: the problems a model is trained and judged on, with their splits and rewards.

One task module is shared by SFT (worked solutions), GRPO (problems), evaluation (held-out
problems) and the pipeline, so a split or an answer check is defined in exactly one place;
mindxh.rewards.judge scores responses with those checks, for GRPO's reward and every
held-out accuracy alike. Tasks know no model.
"""
