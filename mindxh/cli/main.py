"""`mindxh` command line: one sub-command per stage, all driven by recipes.

User errors (bad recipe, missing file, unusable output directory) print one `error:` line
and exit 2; a traceback means a bug in mindxh. Ctrl-C prints `interrupted` and exits 130.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from mindxh.cli import (
    bench_cmd,
    convert_cmd,
    data_cmd,
    eval_cmd,
    export_cmd,
    generate_cmd,
    grade_cmd,
    launch_cmd,
    pipeline_cmd,
    plan_cmd,
    recipe_cmd,
    tokenizer_cmd,
    train_cmd,
)
from mindxh.errors import MindxhError


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("[mindxh] %(message)s"))
    root = logging.getLogger("mindxh")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


SIGTERM_GRACE_S = 30.0  # from SIGTERM to exit 143, for a process stuck inside a kernel
_SIGTERM_BYTE = bytes([signal.SIGTERM])  # what the C-level handler writes to the wakeup fd


def _exit_if_stuck(wakeup: int) -> None:
    """Once a SIGTERM arrives, give the interrupted command SIGTERM_GRACE_S to finish, then
    end the process: Python runs signal handlers only between bytecodes, so a command stuck
    in graph compilation or a blocked collective would otherwise never end."""
    while _SIGTERM_BYTE not in os.read(wakeup, 64):
        pass
    threading.Event().wait(SIGTERM_GRACE_S)
    os._exit(128 + signal.SIGTERM)


def _interrupt_on_sigterm() -> None:
    """MindSpore's graph runtime answers Ctrl-C (SIGINT) by sending its process SIGTERM, which
    ended a training command with no message and status 143. At a terminal, SIGTERM is taken
    as the interrupt it stands for: KeyboardInterrupt, so the command prints `interrupted` and
    exits 130, and the run resumes as after any stop; a command that cannot get back to Python
    (stuck in a kernel) still ends, SIGTERM_GRACE_S later. Elsewhere (a launcher, a scheduler)
    SIGTERM keeps its default."""
    if sys.stdin is None or not sys.stdin.isatty():
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)  # written by the C-level handler, whatever the main thread does
    threading.Thread(target=_exit_if_stuck, args=(read,), daemon=True).start()
    signal.signal(signal.SIGTERM, _raise_interrupt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindxh", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and MindSpore's own warnings")
    sub = parser.add_subparsers(dest="command", required=True)
    train_cmd.register(sub)
    launch_cmd.register(sub)
    recipe_cmd.register(sub)
    plan_cmd.register(sub)
    tokenizer_cmd.register(sub)
    data_cmd.register(sub)
    pipeline_cmd.register(sub)
    generate_cmd.register(sub)
    grade_cmd.register(sub)
    eval_cmd.register(sub)
    convert_cmd.register(sub)
    export_cmd.register(sub)
    bench_cmd.register(sub)
    for command in leaf_parsers(parser):  # `mindxh train R -v` as well as `mindxh -v train R`
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="debug logging, and MindSpore's own warnings")
    return parser


def leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser that runs a command (the leaves of the sub-command tree)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for sub in subs:
        for child in sub.choices.values():
            yield from leaf_parsers(child)


def quiet_mindspore(verbose: bool) -> None:
    """MindSpore's C++ warnings (glog, read when MindSpore loads) are noise for a user: errors
    only, unless -v or the user's own GLOG_v says otherwise."""
    if not verbose:
        os.environ.setdefault("GLOG_v", "3")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_mindspore(args.verbose)
    _setup_logging(args.verbose)
    _interrupt_on_sigterm()
    try:
        return args.func(args) or 0
    except MindxhError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
