"""Recipe -> MindSpore settings: the dicts are exactly what the recipe says, and MindSpore 2.10
itself accepts them (applied on CPU in a child process, read back; the Ascend-only keys,
which CPU ignores, go through MindSpore's own validators). A wrong setting fails here, not
after a cluster has been allocated."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

from mindxh.config import RecipeError, load_recipe
from mindxh.config.scale import PRECISION_MODES, ParallelConfig
from mindxh.config.schema import Recipe
from mindxh.parallel.context import cpu_refusal, needs_semi_auto, settings

SHIPPED = sorted((REPO / "recipes" / "ascend").glob("*.yaml"))

BUILT = {  # recipes written here, each with the settings expected from it, by hand
    "dp4-zero2.yaml": ("""
        compile: {device: CPU, mode: pynative, jit_level: O0}
        parallel: {data_parallel: 4, optimizer_shard: zero2}
        """, {"mode": 1, "jit_config": {"jit_level": "O0"}, "memory_optimize_level": "O0"},
        {"parallel_mode": "semi_auto_parallel", "device_num": 4, "gradients_mean": False,
         "pipeline_stages": 1, "dataset_strategy": ((4, 1), (4, 1)),
         "enable_parallel_optimizer": True, "parallel_optimizer_config": {"optimizer_level": "level2"}}),
    "dp2.yaml": ("""
        parallel: {data_parallel: 2}
        """, {"mode": 0, "jit_config": {"jit_level": "O0"}, "memory_optimize_level": "O0"},
        {"parallel_mode": "data_parallel", "device_num": 2, "gradients_mean": True}),
    "tp-pp-sp.yaml": ("""
        model: {hidden_size: 256, num_layers: 4, num_heads: 8, num_kv_heads: 4,
                intermediate_size: 768, tie_embeddings: false}
        train: {seq_len: 128, batch_size: 8}
        compile: {device: Ascend, jit_level: O1, max_device_memory: 58gb, memory_optimize_level: O1,
                  precision_mode: must_keep_origin_dtype, enable_graph_kernel: true,
                  graph_kernel_flags: "--opt_level=2"}
        parallel: {data_parallel: 2, tensor: 2, pipeline: 2, micro_batches: 4,
                   sequence_parallel: true, vocab_parallel: true, optimizer_shard: zero3,
                   recompute: selective}
        precision: {compute_dtype: bfloat16}
        cluster: {hardware: 910B, devices: 8}
        metrics: {device: 910B2, dtype: bfloat16}
        """, {"mode": 0, "jit_config": {"jit_level": "O1"}, "memory_optimize_level": "O1",
              "max_device_memory": "58GB", "ascend_config": {"precision_mode": "must_keep_origin_dtype"},
              "enable_graph_kernel": True, "graph_kernel_flags": "--opt_level=2"},
        {"parallel_mode": "semi_auto_parallel", "device_num": 8, "gradients_mean": False,
         "pipeline_stages": 2, "dataset_strategy": ((2, 1), (2, 1)),
         "enable_parallel_optimizer": True, "parallel_optimizer_config": {"optimizer_level": "level3"}}),
}

# applies each recipe's settings on CPU and reports what MindSpore read back
CHILD = textwrap.dedent("""
    import json, sys
    import mindspore as ms
    from mindspore.context import _context
    from mindspore.parallel._auto_parallel_context import auto_parallel_context
    from mindxh.config import load_recipe
    from mindxh.parallel.context import apply_context
    out = {}
    for path in sys.argv[1:]:
        ms.set_context(enable_graph_kernel=False, graph_kernel_flags="")  # as a fresh process
        s = apply_context(load_recipe(path), device="CPU")
        ascend_only = {k: s.context[k] for k in ("max_device_memory", "ascend_config") if k in s.context}
        if "max_device_memory" in ascend_only:  # CPU ignores these: run MindSpore's checks directly
            _context().set_max_device_memory(ascend_only["max_device_memory"])
        if "ascend_config" in ascend_only:
            _context().set_ascend_config(ascend_only["ascend_config"])
        get, handle = ms.get_auto_parallel_context, auto_parallel_context()._context_handle
        out[path] = {"mode": ms.get_context("mode"), "jit_config": ms.get_context("jit_config"),
                     "memory_optimize_level": "O%d" % ms.get_context("memory_optimize_level"),
                     "enable_graph_kernel": ms.get_context("enable_graph_kernel"),
                     "graph_kernel_flags": ms.get_context("graph_kernel_flags"),
                     "parallel_mode": get("parallel_mode"), "device_num": get("device_num"),
                     "gradients_mean": get("gradients_mean"), "pipeline_stages": get("pipeline_stages"),
                     "dataset_strategy": get("dataset_strategy"),
                     "enable_parallel_optimizer": get("enable_parallel_optimizer"),
                     "zero3": handle.get_zero3(), "grad_shard": handle.get_grad_accumulation_shard()}
    print("RESULT" + json.dumps(out))
""")


def _write_built(tmp: Path) -> dict[str, Path]:
    paths = {}
    for name, (text, _, _) in BUILT.items():
        paths[name] = tmp / name
        paths[name].write_text(textwrap.dedent(text))
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return _write_built(tmp_path_factory.mktemp("recipes"))


@pytest.fixture(scope="module")
def readback(built) -> dict:
    """One child process applies every recipe (MindSpore's context is process-wide)."""
    paths = [str(p) for p in [*built.values(), *SHIPPED]]
    proc = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", BUILT)
def test_settings_are_what_the_recipe_says(built, name):
    s = settings(load_recipe(built[name]))
    assert s.context == BUILT[name][1]
    assert s.auto_parallel == BUILT[name][2]


def _as_lists(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("path", [*BUILT, *SHIPPED], ids=lambda p: getattr(p, "name", p))
def test_mindspore_accepts_and_reads_back(built, readback, path):
    path = built[path] if isinstance(path, str) else path
    s, got = settings(load_recipe(path)), readback[str(path)]
    ctx, par = s.context, s.auto_parallel
    assert got["mode"] == ctx["mode"] and got["jit_config"] == ctx["jit_config"]
    assert got["memory_optimize_level"] == ctx["memory_optimize_level"]
    assert got["enable_graph_kernel"] == ctx.get("enable_graph_kernel", False)
    assert got["graph_kernel_flags"] == ctx.get("graph_kernel_flags", "")
    assert got["parallel_mode"] == s.parallel_mode
    if par:
        for key in ("device_num", "gradients_mean"):
            assert got[key] == par[key], key
    if s.parallel_mode == "semi_auto_parallel":
        assert got["pipeline_stages"] == par["pipeline_stages"]
        assert got["dataset_strategy"] == _as_lists(par["dataset_strategy"])
    level = par.get("parallel_optimizer_config", {}).get("optimizer_level")
    assert got["enable_parallel_optimizer"] == (level is not None)
    assert got["zero3"] == (level == "level3") and got["grad_shard"] == (level == "level2")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_ascend_recipe_settings(path):
    """Each shipped Ascend recipe, rule by rule: the settings follow from its sections."""
    r = load_recipe(path)
    s, p, c = settings(r), r.parallel, r.compile
    assert s.device == c.device == "Ascend"
    assert s.context["mode"] == (0 if c.mode == "graph" else 1)
    assert s.context["jit_config"] == {"jit_level": c.jit_level}
    assert s.context.get("max_device_memory") == (c.max_device_memory and c.max_device_memory.upper())
    assert s.context.get("ascend_config") == (c.precision_mode and {"precision_mode": c.precision_mode})
    assert s.auto_parallel["device_num"] == p.data_parallel * p.tensor * p.pipeline
    if needs_semi_auto(p):
        assert s.auto_parallel["pipeline_stages"] == p.pipeline
        assert s.auto_parallel["dataset_strategy"][0] == (p.data_parallel, 1)
    zero = {"none": None, "zero1": "level1", "zero2": "level2", "zero3": "level3"}[p.optimizer_shard]
    assert s.auto_parallel.get("parallel_optimizer_config", {}).get("optimizer_level") == zero


def test_single_device_sets_no_parallel_context():
    assert settings(Recipe()).auto_parallel == {}
    assert settings(Recipe()).parallel_mode == "stand_alone"


def test_precision_modes_are_mindsporess():
    """config's list of precision modes is exactly what MindSpore 2.10 validates against."""
    import inspect

    from mindspore.device_context.ascend import op_precision
    source = inspect.getsource(op_precision.precision_mode)
    listed = source[source.index("supported_modes = ["):source.index("]", source.index("supported_modes"))]
    assert sorted(m.strip().strip('",') for m in listed.split("[")[1].split(",") if m.strip()) == \
        sorted(PRECISION_MODES)


def test_wrong_settings_fail_at_load(tmp_path):
    ascend = "metrics: {device: 910B2}\ncompile: {device: Ascend, "
    for text, key in [(ascend + "precision_mode: force_lowerprecision}\n", "compile.precision_mode"),
                      (ascend + "max_device_memory: 058GB}\n", "compile.max_device_memory")]:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=key):
            load_recipe(path)


@pytest.mark.parametrize("parallel,refused", [
    (ParallelConfig(data_parallel=1, tensor=2), "tensor=2"),
    (ParallelConfig(data_parallel=2, pipeline=2, micro_batches=2), "pipeline=2"),
    (ParallelConfig(data_parallel=2, optimizer_shard="zero1"), "optimizer_shard=zero1"),
    (ParallelConfig(data_parallel=2), None),
])
def test_cpu_refuses_semi_auto_plans(parallel, refused):
    message = cpu_refusal(Recipe(parallel=parallel))
    if refused is None:
        assert message is None
    else:
        assert refused in message and "mindxh plan" in message and "Ascend" in message


def test_runtime_configure_raises_launch_error_on_cpu():
    from mindxh.train.runtime import LaunchError, configure

    with pytest.raises(LaunchError, match="mindxh plan RECIPE"):
        configure(Recipe(parallel=ParallelConfig(tensor=2)))  # refused before MindSpore is touched
