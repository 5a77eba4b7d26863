"""Run metrics: one JSON object per log step in OUTPUT_DIR/metrics.jsonl."""
from __future__ import annotations

import json
import logging
import math
import resource
from pathlib import Path

from mindxh.errors import MindxhError

log = logging.getLogger(__name__)


class MetricsError(MindxhError, ValueError):
    """A metrics.jsonl a resume cannot continue."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MetricsLog:
    """Appends records; on resume, drops those past the checkpoint so the file has each step once."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in _parsed_lines(path)
                    if json.loads(line).get("step", 0) <= resume_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(path)

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")


def _parsed_lines(path: Path) -> list[str]:
    """The records of a metrics file; a last line cut short (a kill or a full disk during an
    append: appends are not fsynced) is dropped with a warning, any other bad line is an
    error naming it."""
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    good = []
    for i, (n, line) in enumerate(lines):
        try:
            json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                log.warning("%s, line %d: a record cut short, dropped: %.60s", path, n, line)
                continue
            raise MetricsError(f"{path}, line {n}: not a JSON record; repair or remove the line "
                               "to resume") from None
        good.append(line)
    return good


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
