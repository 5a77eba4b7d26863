"""The chat template: how a conversation becomes token ids and a loss mask.

Deliberately minimal, and the same text layout the pretraining corpus uses
(``question\\nresponse``), so a pretrained model already knows where an answer starts:

    <s> {system}\\n {user}\\n {assistant}</s> {user}\\n {assistant}</s> ...

Each message is encoded on its own, so the boundary between a prompt and its answer
is a token boundary: the ids of ``prompt_ids(tok, q)`` are exactly the first ids of
the rendered sample, which is what generation and GRPO rely on. The loss mask is 1 on
assistant tokens and their closing ``</s>`` (the model must learn to stop), 0 elsewhere.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mindxh.errors import MindxhError
from mindxh.tokenizer.spm import Tokenizer

__all__ = ["ChatFormatError", "messages_of", "prompt_ids", "render_chat"]

_ROLES = ("system", "user", "assistant")


class ChatFormatError(MindxhError, ValueError):
    """A sample that is not `{"messages": [...]}` or `{"prompt", "response"}`."""


def messages_of(sample: Mapping[str, Any]) -> list[dict[str, str]]:
    """The sample as a list of {role, content}; raises ChatFormatError naming what is wrong."""
    if "messages" in sample:
        msgs = sample["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ChatFormatError("'messages' must be a non-empty list")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise ChatFormatError(f"messages[{i}] needs 'role' and 'content'")
            if m["role"] not in _ROLES:
                raise ChatFormatError(f"messages[{i}].role is {m['role']!r}; expected one of {_ROLES}")
            if not isinstance(m["content"], str):
                raise ChatFormatError(f"messages[{i}].content must be a string")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "assistant" for m in out):
            raise ChatFormatError("'messages' has no assistant turn to learn from")
        if not any(m["content"].strip() for m in out if m["role"] == "assistant"):
            raise ChatFormatError("every assistant turn is empty: nothing to learn from")
        return out
    missing = [k for k in ("prompt", "response") if k not in sample]
    if missing:
        raise ChatFormatError("missing field " + " and ".join(repr(k) for k in missing) +
                              " (expected 'messages', or 'prompt' and 'response')")
    if not isinstance(sample["prompt"], str) or not isinstance(sample["response"], str):
        raise ChatFormatError("'prompt' and 'response' must be strings")
    if not sample["response"].strip():
        raise ChatFormatError("'response' is empty: nothing to learn from")
    return [{"role": "user", "content": sample["prompt"]},
            {"role": "assistant", "content": sample["response"]}]


def render_chat(tok: Tokenizer, sample: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask), both int32 [L]; mask is 1 on tokens the model must produce."""
    ids, mask = [tok.bos_id], [0]
    for m in messages_of(sample):
        if m["role"] == "assistant":
            piece = tok.encode(m["content"]) + [tok.eos_id]
            mask += [1] * len(piece)
        else:
            piece = tok.encode(m["content"] + "\n")
            mask += [0] * len(piece)
        ids += piece
    return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def prompt_ids(tok: Tokenizer, prompt: str) -> list[int]:
    """The ids a model is given to answer a single-turn `prompt` (ends where the answer starts)."""
    return [tok.bos_id] + tok.encode(prompt + "\n")
