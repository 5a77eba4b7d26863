"""Verifiable rewards: rule-based scores for math answers, output format and code.

`judge` scores any task's responses (GRPO's reward, every held-out accuracy): the math
tasks' checks are pure Python (mindxh.tasks), while `math` (math-verify, worker processes),
`code` and `sandbox` (subprocesses) are imported on demand.
"""
