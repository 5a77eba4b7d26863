"""The reasoning format tasks ask for and GRPO rewards: `<think>...</think><answer>...</answer>`.

One think block, one answer block, nothing else around them.

Pure Python and regex only: it runs on every sampled response in the GRPO loop.
"""
from __future__ import annotations

import re

__all__ = ["answer_text", "format_ok"]

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_LAYOUT = re.compile(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def format_ok(text: str) -> bool:
    """True iff `text` is one think block then one answer block, with only whitespace around."""
    return all(text.count(tag) == 1 for tag in _TAGS) and _LAYOUT.fullmatch(text) is not None


def answer_text(text: str, strip: bool = True) -> str | None:
    """The content of the last complete `<answer>...</answer>` (stripped unless `strip` is
    False), or None if there is none."""
    found = _ANSWER.findall(text)
    if not found:
        return None
    return found[-1].strip() if strip else found[-1]
