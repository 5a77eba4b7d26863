"""The machine a run measured, and its results as Markdown (bench.md) beside JSON (bench.json).

The Markdown is meant to be pasted into docs/performance.md unchanged, so it carries its
own context: machine, versions, load average, command, peak probe, warm-up and step counts.
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from mindxh.bench import spec
from mindxh.bench.harness import MF_PYTHON

_PACKAGES = ("mindspore", "numpy", "torch", "transformers")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        return round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _mindformers_versions() -> str | None:
    if not MF_PYTHON.exists():
        return None
    code = ("from importlib import metadata as m; "
            "print('mindformers', m.version('mindformers'), 'mindspore', m.version('mindspore'))")
    try:
        out = subprocess.run([str(MF_PYTHON), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gib": _memory_gib(), "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {name: _version(name) for name in _PACKAGES},
            "mindformers_venv": _mindformers_versions(),
            "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                            if k in os.environ}}


def _f(value, fmt: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _train_md(section: dict) -> list[str]:
    out = [f"#### Train step: {section['config']} ({section['shape']}; "
           f"{section['parameters']:,} parameters; {section['flops_per_token'] / 1e6:.2f} MFLOP/token)",
           "", "| peer | tokens/s | step ms median | min | max | first step s | peak RSS MB | MFU | "
           f"{spec.BASELINE} / this | loss step 1 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in section["rows"]:
        if r["error"] and not r["rounds"]:
            out.append(f"| {r['peer']} | {r['error']} | | | | | | | | |")
            continue
        st = r["step_s"]
        out.append(f"| {r['peer']} | {_f(r['tokens_per_s'])} | {_f(1e3 * st['median'], '.1f')} | "
                   f"{_f(1e3 * st['min'], '.1f')} | {_f(1e3 * st['max'], '.1f')} | "
                   f"{_f(r['first_step_s'], '.1f')} | {_f(r['peak_rss_mb'])} | "
                   f"{_f(100 * r['mfu'] if r['mfu'] is not None else None, '.1f')}% | "
                   f"{_x(r['baseline_over_this'])} | {_f(r['loss_first'], '.5f')} |")
    frameworks = [f"{r['peer']}: {r['framework']}" for r in section["rows"] if r["framework"]]
    notes = [f"{r['peer']} stopped after {r['rounds']} round(s): {r['error']}"
             for r in section["rows"] if r["error"] and r["rounds"]]
    return out + [""] + [f"- {line}" for line in frameworks + notes] + [""]


def _gen_md(section: dict) -> list[str]:
    out = [f"#### Generation: {section['config']} ({section['shape']}; prompt "
           f"{section['prompt_tokens']} tokens, greedy, fp32)", "",
           "| batch | new tokens | method | tokens/s | wall s | first call s | cached / this | "
           "first 8 tokens = cached | token agreement |", "|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in section["rows"]:
        if r["error"] and r["tokens_per_s"] is None:
            out.append(f"| {r['batch']} | {r['new_tokens']} | {r['method']} | {r['error']} | | | | | |")
            continue
        agree = r["agreement_with_cached"]
        note = "" if r["timed_steps"] == r["new_tokens"] else f" ({r['timed_steps']} steps timed)"
        if r.get("window"):  # the Generator decoded through a RecentWindow (cache.py)
            note += f" (window {r['window']})"
        out.append(f"| {r['batch']} | {r['new_tokens']} | {r['method']}{note} | {_f(r['tokens_per_s'])} | "
                   f"{_f(r['wall_s']['median'], '.2f')} | {_f(r['first_call_s'], '.1f')} | "
                   f"{_x(r['cached_vs_this'])} | "
                   f"{'-' if not agree else ('yes' if agree['first_tokens_agree'] else 'NO')} | "
                   f"{'-' if not agree else format(agree['token_agreement'], '.1%')} |")
    return out + [""] + [f"- {m}: {fw}" for m, fw in section["frameworks"].items()] + [""]


def _grpo_md(g: dict) -> list[str]:
    if "error" in g:
        return ["#### GRPO step", "", f"failed: {g['error']}", ""]
    ph, total = g["phases_median_s"], g["step_s"]
    rows = [f"| {name} | {ph[key]:.4f} | {100 * ph[key] / total:.2f}% |"
            for name, key in (("sampling", "sample_s"), ("reward", "reward_s"), ("update", "update_s"))]
    return [f"#### GRPO step: {g['recipe']} ({g['rollouts_per_step']} rollouts x up to "
            f"{g['max_new_tokens']} tokens per step; median of {g['timed_steps']} steps after the "
            "first)", "", "| phase | s / step | share |", "|---|---:|---:|", *rows,
            f"| **total** | {total:.3f} | 100% |", "",
            "- update: every group trained on (`grpo.skip_uniform_groups=false`; a run skips "
            "groups with equal rewards, so its updates cost at most this), "
            + (f"in micro-batches of {g['micro_batch_rows']} rows" if g.get("micro_batch_rows")
               else "the whole batch in one pass"),
            f"- first step (compiles): {g['first_step_s']:.1f} s; peak RSS {g['peak_rss_mb']:,.0f} MB",
            f"- projected GRPO stage ({g['recipe_steps']} steps, validation excluded): "
            f"{g['projected_stage_s'] / 60:.1f} min", ""]


def to_markdown(result: dict) -> str:
    m, o = result["machine"], result["options"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items() if val)
    lines = [f"### mindxh bench ({result['started']})", "",
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
             f"{m['memory_gib']} GiB; {m['platform']}; Python {m['python']}",
             f"- versions: {v}; mindformers venv: {m['mindformers_venv'] or 'none'}",
             f"- load average at start / end: {result['load_start']} / {result['load_end']}",
             f"- command: `{result['command']}` ({result['wall_s'] / 60:.1f} min)",
             f"- float32, AdamW (lr {spec.OPTIM['lr']}, betas {spec.OPTIM['beta1']}/"
             f"{spec.OPTIM['beta2']}, eps {spec.OPTIM['eps']}, weight decay "
             f"{spec.OPTIM['weight_decay']} on matrices, clip {spec.OPTIM['grad_clip']}); vocab "
             f"{spec.VOCAB}; FFN {spec.FFN_RATIO} x hidden rounded to a multiple of {spec.FFN_MULTIPLE}; "
             "untied head; random token ids, identical initial weights in every peer",
             f"- {o['repeats']} alternated round(s) per peer, one process each"]
    if "train" in result:
        lines[-1] += (f"; train: {o['warmup']} warm-up step(s) excluded, {o['steps']} timed steps "
                      f"per round ({min(o['steps'], o['pynative_steps'])} for PyNative), medians "
                      "over all timed steps")
        lines.append(f"- MFU peak: {result['peak']['method']}: {result['peak']['flops'] / 1e9:.1f} "
                     f"GFLOP/s (the best of this run's probes: {result['peak']['probes_gflops']})")
    if any((r["mfu"] or 0) > 1 for s in result.get("train", []) for r in s["rows"]):
        lines.append("- **MFU above 100%: every probe ran under load, so the peak is under-read "
                     "and no MFU of this run means anything**")
    lines.append("")
    for section in result.get("train", []):
        lines += _train_md(section)
    for section in result.get("generate", []):
        lines += _gen_md(section)
    if "grpo" in result:
        lines += _grpo_md(result["grpo"])
    return "\n".join(lines)
