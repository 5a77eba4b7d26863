"""Verifiable rewards: rule-based scores for math answers, output format and code.

Submodules are imported on demand: `arith` and `format` are pure Python for the RL hot
loop, while `math` (math-verify, worker processes) and `sandbox` (subprocesses) are not.
"""
