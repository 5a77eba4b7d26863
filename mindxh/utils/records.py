"""Reading user-supplied JSONL (graded answers, samples, prompts), each problem named by file and line."""
from __future__ import annotations

import json
from typing import Iterator, Mapping

from mindxh.errors import MindxhError, MissingFileError

__all__ = ["JsonlError", "read_records"]


class JsonlError(MindxhError, ValueError):
    """An input file that cannot be used as given; the message names the file (and line)."""


def read_records(path: str, fields: Mapping[str, type]) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, object, None) for each usable line, (line number, None, problem) otherwise.

    A usable line is a JSON object holding each of `fields` with the given type. Blank
    lines are skipped. Unreadable files raise JsonlError (missing ones FileNotFoundError).
    """
    try:
        f = open(path, "rb")  # lines decoded one by one: a bad byte costs its line, named
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise JsonlError(f"{path}: {exc.strerror}") from None
    with f:
        try:
            for lineno, raw in enumerate(f, 1):
                try:  # utf-8-sig on line 1: a byte-order mark is not part of the JSON
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    yield lineno, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                    continue
                if not isinstance(obj, dict):
                    yield lineno, None, f"expected a JSON object, got {type(obj).__name__}"
                    continue
                bad = [f"'{k}' ({t.__name__})" for k, t in fields.items()
                       if not isinstance(obj.get(k), t)]
                if bad:
                    yield lineno, None, "missing or mistyped field " + ", ".join(bad)
                    continue
                yield lineno, obj, None
        except OSError as exc:
            raise JsonlError(f"{path}: {exc.strerror}") from None
