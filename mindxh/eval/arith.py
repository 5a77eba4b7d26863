"""Held-out accuracy on the synthetic arithmetic problems (greedy decoding)."""
from __future__ import annotations

from mindxh.data.chat import prompt_ids
from mindxh.data.synthetic import Problem
from mindxh.tokenizer import Tokenizer

__all__ = ["greedy_accuracy"]


def greedy_accuracy(generator, tok: Tokenizer, problems: list[Problem],
                    max_new_tokens: int) -> tuple[float, list[dict]]:
    """(accuracy, one record per problem: question, answer, response, correct, format_ok)."""
    from mindxh.generate.sampling import SamplingConfig
    from mindxh.rewards.arith import is_correct
    from mindxh.rewards.format import format_ok

    if not problems:
        raise ValueError("no problems to evaluate")
    prompts = [prompt_ids(tok, p.prompt()) for p in problems]
    completions = generator.generate(prompts, SamplingConfig(max_new_tokens=max_new_tokens,
                                                             temperature=0.0))
    records = [{"question": p.question, "answer": p.answer, "response": c.text,
                "correct": bool(is_correct(c.text, p.answer)), "format_ok": bool(format_ok(c.text)),
                "finish_reason": c.finish_reason}
               for p, c in zip(problems, completions)]
    return sum(r["correct"] for r in records) / len(records), records
