"""`train.init_from`: start a run from another run's weights (e.g. SFT after pretraining).

Only the model tensors are taken; the optimizer, the step counter and the data position
start fresh, so the new run's schedule and data are its own recipe's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from mindxh.checkpoint import store as ckpt
from mindxh.errors import MindxhError

log = logging.getLogger(__name__)


class InitFromError(MindxhError, ValueError):
    """train.init_from names nothing usable, or weights that do not fit the model."""


def resolve(path: str | Path) -> Path:
    """A checkpoint directory as given, or a run directory's newest complete checkpoint."""
    p = Path(path)
    if (p / ckpt.MODEL_FILE).is_file():
        return p
    latest = ckpt.latest_checkpoint(p)
    if latest is None:
        raise InitFromError(f"train.init_from={path}: neither a checkpoint directory (with "
                            f"{ckpt.MODEL_FILE}) nor a run directory with complete checkpoints")
    return latest


def load_weights(path: str | Path, params: Iterable, tokenizer_sha256: str) -> Path:
    """Set `params` ((name, Parameter) pairs) from the checkpoint `path` resolves to; every
    model tensor must be there with the same shape, and nothing else may be."""
    where = resolve(path)
    try:
        state = ckpt.load_checkpoint(where)
    except ckpt.CheckpointError as exc:
        raise InitFromError(f"train.init_from={path}: {exc}") from None
    saved_tok = state.state.get("data", {}).get("tokenizer_sha256")
    if saved_tok is not None and saved_tok != tokenizer_sha256:
        raise InitFromError(f"train.init_from={path}: {where.name} was trained with another "
                            f"tokenizer (sha256 {saved_tok[:12]}...) than this run's "
                            f"({tokenizer_sha256[:12]}...); its token ids would mean other words")
    try:
        ckpt.assign_tensors(state.model, params, where / ckpt.MODEL_FILE)
    except ckpt.CheckpointError as exc:
        raise InitFromError(f"train.init_from={path}: {exc}; this recipe's model differs") from None
    log.info("initialised the weights from %s (step %d); optimizer and data start fresh", where,
             state.step)
    return where
