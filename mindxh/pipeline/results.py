"""What each pipeline stage hands to the later ones and to the report, as typed values.

A finished stage's result is written to OUT/stages/<stage>.json (`dataclasses.asdict`) and,
on a re-run, read back into the same class by `from_dict`, which refuses a file whose keys
or value types no longer fit (one written by another version of mindxh), so a stale file
is an error naming it rather than a KeyError three stages later.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

__all__ = ["RESULT_TYPES", "ControlsResult", "CurvePoint", "EvalResult", "ExportResult",
           "MoreSFTResult", "PolicyResult", "PretrainResult", "SFTResult", "StageResult",
           "TokenizerResult", "from_dict"]

T = TypeVar("T")


@dataclass
class StageResult:
    """Base of every stage's result; the runner sets `wall_s` once the stage has finished,
    and `inputs` / `fingerprint`: the recipe values and upstream fingerprints the stage
    depended on (mindxh/pipeline/inputs.py), so a re-run can tell stale results apart."""

    wall_s: float | None = field(default=None, kw_only=True)
    inputs: dict[str, Any] | None = field(default=None, kw_only=True)
    fingerprint: str | None = field(default=None, kw_only=True)


@dataclass
class TokenizerResult(StageResult):
    path: str
    vocab_size: int
    sha256: str


@dataclass
class PretrainResult(StageResult):
    checkpoint: str
    steps: int
    loss: float
    eval_loss: float | None
    tokens_per_s: float


@dataclass
class CurvePoint:
    """SFT's validation accuracy at one checkpoint."""

    step: int
    val_accuracy: float


@dataclass
class SFTResult(StageResult):
    checkpoint: str  # the checkpoint kept (early stopping, else the best on validation)
    step: int
    val_accuracy: float
    curve: list[CurvePoint]
    train_s: float
    steps_run: int
    step_s: float  # seconds per step: sizes the more-SFT control to GRPO's wall time
    data: str  # the prepared cold-start set, reused by the more-SFT control
    examples: int


@dataclass
class PolicyResult(StageResult):
    """A GRPO run: the grpo stage, or the shuffled-rewards control."""

    checkpoint: str
    steps: int
    val_accuracy: float | None
    train_s: float
    metrics: str  # its metrics.jsonl, plotted by the report


@dataclass
class MoreSFTResult:
    """The control that spends GRPO's wall time on more SFT instead."""

    checkpoint: str
    steps: int
    train_s: float


@dataclass
class ControlsResult(StageResult):
    """The controls that ran (each one is switched on in pipeline.*), in running order."""

    shuffled_rewards: PolicyResult | None = None
    more_sft: MoreSFTResult | None = None

    def checkpoints(self) -> dict[str, str]:
        """Control name -> the checkpoint to evaluate, for the controls that ran."""
        runs = {"shuffled_rewards": self.shuffled_rewards, "more_sft": self.more_sft}
        return {name: run.checkpoint for name, run in runs.items() if run is not None}


@dataclass
class EvalResult(StageResult):
    problems: int
    accuracy: dict[str, float]  # model name (sft, grpo, control_<name>) -> held-out accuracy
    # model name -> one "1"/"0" per test problem, in test-set order: the paired comparisons
    # (GRPO - SFT on the same problems) and confidence intervals of the report need them
    correct: dict[str, str] = field(default_factory=dict)
    # the test set is `problems` problems of each task, task after task (data.tasks order)
    tasks: list[str] = field(default_factory=lambda: ["math"])

    def by_task(self) -> dict[str, dict[str, float]]:
        """task -> model -> held-out accuracy on that task's part of the test set."""
        n = self.problems
        return {task: {model: bits[i * n:(i + 1) * n].count("1") / n
                       for model, bits in self.correct.items()}
                for i, task in enumerate(self.tasks)}


@dataclass
class ExportResult(StageResult):
    """The MindIR export and its check, or why there is none (`skipped`)."""

    file: str | None = None  # the export's manifest.json; its folder holds graphs and tokenizer
    bytes: int | None = None  # graphs and tokenizer together
    max_abs_diff: float | None = None
    checkpoint: str | None = None
    skipped: str | None = None


RESULT_TYPES: dict[str, type[StageResult]] = {
    "tokenizer": TokenizerResult,
    "pretrain": PretrainResult,
    "sft": SFTResult,
    "grpo": PolicyResult,
    "controls": ControlsResult,
    "eval": EvalResult,
    "export": ExportResult,
}


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """`cls` rebuilt from its `asdict` form; ValueError naming the first key that does not fit."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the file'}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    missing = sorted(name for name, f in known.items() if name not in data
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise ValueError(f"{where or cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()})


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:  # recorded recipe values (`StageResult.inputs`): any JSON value
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):  # only `X | None` is used above
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list and isinstance(value, list):
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(tp)
    if ok is not None and isinstance(value, ok) and (tp is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
