"""One invocation, every section: probe the peak, run the sections, probe again, write.

The GEMM probe runs at the start, after each train config and at the end, and the highest
reading is the MFU peak: on a shared machine a single probe taken during someone else's burst
would flatter every MFU (a loaded 2-core machine read 13 GFLOP/s against ~88 quiet).
Scratch files (weights, the GRPO run) live under OUT/work and are removed at the end; the
children's logs stay in OUT/work/logs, where a failed peer's full error can be read.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from argparse import Namespace
from pathlib import Path

from mindxh.bench import sections
from mindxh.bench.harness import log, measure_peak
from mindxh.bench.report import machine_info, to_markdown

SECTIONS = ("train", "generate", "grpo")


def _peak(work: Path) -> dict:
    res = measure_peak(work)
    if "error" in res:
        raise RuntimeError(f"the GEMM peak probe failed: {res['error']}")
    return res


def run(opts: Namespace, command: str) -> dict:
    """Everything `opts` asks for, as one result dict (see report.to_markdown)."""
    out = Path(opts.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    result: dict = {"started": started, "command": command, "machine": machine_info(),
                    "load_start": [round(x, 2) for x in os.getloadavg()],
                    "options": {"configs": opts.configs, "peers": opts.peers, "only": opts.only,
                                "repeats": opts.repeats, "steps": opts.steps, "warmup": opts.warmup,
                                "pynative_steps": opts.pynative_steps,
                                "gen_batch": opts.gen_batch, "gen_new": opts.gen_new,
                                "recompute_cap": opts.recompute_cap, "grpo_steps": opts.grpo_steps}}
    probes = [_peak(work)]
    log(f"GEMM probe: {probes[0]['flops'] / 1e9:.1f} GFLOP/s")
    if "train" in opts.only:
        result["train"] = []
        for config in opts.configs:
            result["train"].append(sections.train(config, opts.peers, opts, work))
            probes.append(_peak(work))  # more chances to catch a quiet moment
    if "generate" in opts.only:
        result["generate"] = [sections.generate(c, opts.peers, opts, work) for c in opts.configs]
    if "grpo" in opts.only:
        result["grpo"] = sections.grpo(opts, work)
    probes.append(_peak(work))
    top = max(probes, key=lambda p: p["flops"])
    best = top["flops"]
    for section in result.get("train", []):
        sections.set_mfu(section, best)
    result["peak"] = {"flops": best, "method": top["method"],  # the probe the figure is from
                      "probes_gflops": [round(p["flops"] / 1e9, 1) for p in probes]}
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - t0
    return result


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """OUT/bench.md and OUT/bench.json; scratch weights and the GRPO run are removed."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "bench.md", out / "bench.json"
    md.write_text(to_markdown(result) + "\n", encoding="utf-8")
    js.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    work = out / "work"
    for path in work.glob("*.safetensors"):
        path.unlink()
    shutil.rmtree(work / "grpo", ignore_errors=True)
    return md, js


def parse_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if allowed is not None and v not in allowed]
    if not items or bad:
        raise ValueError(f"{what}: expected a comma list of {', '.join(allowed or ())}; got {value!r}")
    return items


def parse_ints(value: str, what: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise ValueError(f"{what}: expected positive integers like 1,32; got {value!r}")
    return items


__all__ = ["SECTIONS", "parse_ints", "parse_list", "run", "write"]
