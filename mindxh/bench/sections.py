"""The three benchmark sections (train step, generation, GRPO step) as rows of numbers.

Each section builds the children's parameters from `spec`, runs them through
`harness.alternate`, and reduces the rounds to rows; `report` turns rows into Markdown.
"""
from __future__ import annotations

from pathlib import Path

from mindxh.bench import spec
from mindxh.bench.harness import MF_PYTHON, alternate, log, ratio, run_child, spread
from mindxh.train.runtime import FUSED_CPU_ENV

GEN_METHODS = ("mindxh-cached", "mindxh-cached-fused", "mindxh-recompute", "hf-generate")
AGREE_PREFIX = 8  # "first tokens agree": the first 8 greedy tokens of every row


def _weights(work: Path, name: str, params: dict) -> str:
    path = work / f"{name}.safetensors"
    if not path.exists():
        res = run_child("weights", {**params, "out": str(path)}, log_file=work / "logs" / f"{name}.log")
        if "error" in res:
            raise RuntimeError(f"could not build the {name} weights: {res['error']}")
    return str(path)


def _train_job(peer: str, params: dict) -> tuple[str, dict, str | None, dict] | str:
    """(job, params, python, extra environment) for a peer, or the reason it cannot run here."""
    if peer in ("mindxh-graph", "mindxh-pynative", "mindxh-graph-fused"):
        # -fused: graph mode with compile.enable_graph_kernel (CPU graph-kernel fusion, opt-in),
        # in the environment the `mindxh` commands give a fusing recipe (runtime.prepare_process)
        fused = peer.endswith("-fused")
        return ("train-mindxh", {**params, "mode": peer.split("-")[1], "graph_kernel": fused},
                None, dict(FUSED_CPU_ENV) if fused else {})
    if peer in ("torch-eager", "torch-compile"):
        return "train-torch", {**params, "compile": peer == "torch-compile"}, None, {}
    if peer == "mindformers":
        if not MF_PYTHON.exists():
            return f"not installed (no {MF_PYTHON})"
        return "train-mindformers", params, str(MF_PYTHON), {}
    raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(spec.TRAIN_PEERS)}")


def train(config: str, peers: list[str], opts, work: Path) -> dict:
    """Train-step rows for one config: every peer's step times over `opts.repeats` rounds."""
    s = spec.shape(config)
    weights = _weights(work, f"{config}-train", {"config": config})
    base = {"config": config, "weights": weights, "warmup": opts.warmup, "steps": opts.steps,
            "log_dir": str(work / "mindformers-logs")}

    def measure(peer: str, rnd: int) -> dict:
        job = _train_job(peer, base)
        if isinstance(job, str):
            return {"error": job}
        log(f"train {config}: {peer}, round {rnd + 1}/{opts.repeats}")
        name, params, python, env = job
        if peer == "mindxh-pynative":  # op by op: 5-10x slower, so fewer steps
            params = {**params, "steps": min(opts.steps, opts.pynative_steps)}
        return run_child(name, params, python, opts.timeout,
                         work / "logs" / f"train-{config}-{peer}-r{rnd + 1}.log", env)

    runs, errors = alternate(peers, opts.repeats, measure)
    fpt = spec.flops_per_token(s)
    tokens_per_step = s.batch * s.seq
    rows = []
    for peer in peers:
        rr = runs[peer]
        times = spread(t for r in rr for t in r["step_s"])
        tps = tokens_per_step / times["median"] if times["median"] else None
        rows.append({
            "peer": peer, "error": errors.get(peer), "rounds": len(rr),
            "framework": rr[0]["framework"] if rr else None, "tokens_per_s": tps,
            "step_s": times, "first_step_s": spread(r["first_s"] for r in rr)["median"],
            "peak_rss_mb": max((r["peak_rss_mb"] for r in rr), default=None),
            "mfu": None,  # set_mfu, once the run's best GEMM probe is known
            "loss_first": rr[0]["loss_first"] if rr else None,
            "round_medians_s": [spread(r["step_s"])["median"] for r in rr]})
    baseline = next((r["tokens_per_s"] for r in rows if r["peer"] == spec.BASELINE), None)
    for row in rows:  # > 1: mindxh graph mode is that many times faster than this peer
        row["baseline_over_this"] = ratio(baseline, row["tokens_per_s"])
    return {"config": config, "shape": s.describe(), "parameters": spec.parameter_count(s),
            "flops_per_token": fpt, "tokens_per_step": tokens_per_step, "rows": rows}


def set_mfu(section: dict, peak: float) -> None:
    """MFU of every row: model FLOP/s (README convention) over the GEMM probe's FLOP/s."""
    for row in section["rows"]:
        tps = row["tokens_per_s"]
        row["mfu"] = tps * section["flops_per_token"] / peak if tps else None


def _gen_methods(peers: list[str]) -> list[str]:
    """mindxh's two methods when mindxh-graph is asked for, the cached one with graph-kernel
    fusion with mindxh-graph-fused, transformers' with torch-eager."""
    keep = {"mindxh-cached": spec.BASELINE, "mindxh-cached-fused": "mindxh-graph-fused",
            "mindxh-recompute": spec.BASELINE, "hf-generate": "torch-eager"}
    return [m for m in GEN_METHODS if keep[m] in peers]


def _agreement(a: list[list[int]] | None, b: list[list[int]] | None) -> dict | None:
    """How far two greedy outputs agree: every row's first AGREE_PREFIX tokens, and the
    fraction of equal tokens over the positions both have."""
    if not a or not b:
        return None
    n = min(len(a[0]), len(b[0]))
    k = min(AGREE_PREFIX, n)  # a recomputation timed over fewer steps has fewer tokens
    prefix = all(x[:k] == y[:k] for x, y in zip(a, b))
    same = sum(int(u == v) for x, y in zip(a, b) for u, v in zip(x[:n], y[:n]))
    return {"first_tokens_agree": prefix, "token_agreement": same / (n * len(a)), "compared": n}


def generate(config: str, peers: list[str], opts, work: Path) -> dict:
    """Generation rows for one config: each method x (batch, new tokens) case."""
    cases = [[b, n] for n in opts.gen_new for b in opts.gen_batch]
    longest = spec.GEN_PROMPT + max(opts.gen_new)
    weights = _weights(work, f"{config}-gen{longest}", {"config": config, "max_seq_len": longest,
                                                       "init_std": spec.GEN_INIT_STD})
    base = {"config": config, "weights": weights, "cases": cases, "recompute_cap": opts.recompute_cap}
    methods = _gen_methods(peers)

    def measure(method: str, rnd: int) -> dict:
        log(f"generate {config}: {method}, round {rnd + 1}/{opts.repeats}")
        fused = method.endswith("-fused")  # in the environment a fusing `mindxh` command has
        job, params = ("gen-hf", base) if method == "hf-generate" else (
            "gen-mindxh", {**base, "method": method.split("-")[1], "graph_kernel": fused})
        return run_child(job, params, None, opts.timeout,
                         work / "logs" / f"gen-{config}-{method}-r{rnd + 1}.log",
                         dict(FUSED_CPU_ENV) if fused else {})

    runs, errors = alternate(methods, opts.repeats, measure)
    rows = []
    for i, (batch, new) in enumerate(cases):
        per = {m: [r["cases"][i] for r in runs[m]] for m in methods}
        walls = {m: spread(c["wall_s"] for c in per[m]) for m in methods}
        steps = {m: per[m][0]["timed_steps"] if per[m] else None for m in methods}
        speed = {m: batch * steps[m] / walls[m]["median"] if per[m] else None for m in methods}
        tokens = {m: per[m][0]["tokens"] if per[m] else None for m in methods}
        for m in methods:
            rows.append({
                "batch": batch, "new_tokens": new, "method": m, "error": errors.get(m),
                "tokens_per_s": speed[m], "wall_s": walls[m], "timed_steps": steps[m],
                "window": per[m][0].get("window") if per[m] else None,
                "first_call_s": spread(c["first_s"] for c in per[m])["median"],
                "cached_vs_this": ratio(speed.get("mindxh-cached"), speed[m]),
                "agreement_with_cached": None if m == "mindxh-cached" else _agreement(
                    tokens.get("mindxh-cached"), tokens[m])})
    frameworks = {m: runs[m][0]["framework"] for m in methods if runs[m]}
    return {"config": config, "shape": spec.shape(config).describe(batch=False),
            "prompt_tokens": spec.GEN_PROMPT, "frameworks": frameworks, "rows": rows}


def grpo(opts, work: Path) -> dict:
    """Per-step wall time of the tiny X1 GRPO stage split into sampling, reward and update."""
    log(f"grpo: {opts.grpo_recipe}, {opts.grpo_steps} steps")
    res = run_child("grpo", {"recipe": str(opts.grpo_recipe), "steps": opts.grpo_steps,
                             "work": str(work / "grpo")}, None, opts.timeout,
                    work / "logs" / "grpo.log")
    if "error" in res:
        return {"error": res["error"]}
    steady = res["steps"][1:] or res["steps"]  # step 1 compiles the generator and the step cell
    phases = {k: spread(st[k] for st in steady)["median"] for k in ("sample_s", "reward_s", "update_s")}
    total = sum(phases.values())
    return {"recipe": _shown(opts.grpo_recipe), "steps": res["steps"], "phases_median_s": phases,
            "step_s": total, "first_step_s": sum(res["steps"][0][k] for k in phases),
            "rollouts_per_step": res["rollouts_per_step"], "max_new_tokens": res["max_new_tokens"],
            "micro_batch_rows": res["micro_batch_rows"], "recipe_steps": res["recipe_steps"],
            "projected_stage_s": total * res["recipe_steps"],
            "peak_rss_mb": res["peak_rss_mb"], "timed_steps": len(steady)}


def _shown(path) -> str:
    """A path relative to the repository when it is inside it (for pasting into docs)."""
    from mindxh.bench.harness import REPO_ROOT

    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
