"""What the user watches: a tqdm bar on a terminal, one log line per log step otherwise.

A bar redrawn with carriage returns is unreadable in a CI log or a `nohup` file, so when
stderr is not a terminal (or `--no-progress` is given) each log step becomes a plain line.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("mindxh.train")


class Progress:
    def __init__(self, name: str, total: int, initial: int, bar: bool):
        self.total = total
        self._bar = None
        if bar and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=name, unit="step",
                             dynamic_ncols=True, mininterval=0.5)

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def report(self, record: dict) -> None:
        """Show one metrics record: on the bar, or as a line."""
        if self._bar is not None:
            extra = ({"scale": f"{record['loss_scale']:g}", "skipped": record["skipped_steps"]}
                     if "loss_scale" in record else {})  # only with precision.loss_scale
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                                  mfu=f"{record['mfu']:.2%}", **extra)
            if "eval_loss" in record and record["eval_loss"] is not None:
                log.info("step %d: held-out loss %.4f", record["step"], record["eval_loss"])
            return
        line = (f"step {record['step']}/{self.total} | loss {record['loss']:.4f} | "
                f"lr {record['lr']:.3g} | grad_norm {record['grad_norm']:.3f} | "
                f"{record['tokens_per_s']:,.0f} tokens/s | MFU {record['mfu']:.2%} | "
                f"peak RSS {record['peak_rss_mb']:,.0f} MB")
        if "loss_scale" in record:
            line += f" | loss scale {record['loss_scale']:g} | skipped {record['skipped_steps']}"
        if record.get("eval_loss") is not None:
            line += f" | held-out loss {record['eval_loss']:.4f}"
        log.info(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
