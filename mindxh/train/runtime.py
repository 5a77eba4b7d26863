"""Process-wide MindSpore set-up from a recipe: device, execution mode, seed."""
from __future__ import annotations

import logging
import os
import sys

from mindxh.config.schema import Recipe
from mindxh.errors import MindxhError


class LaunchError(MindxhError, RuntimeError):
    """The recipe asks for a launch this process was not started with."""


def world_size() -> int:
    """Ranks in this job as msrun reports them (1 when not launched by msrun)."""
    return int(os.environ.get("MS_WORKER_NUM", os.environ.get("RANK_SIZE", "1")))


def _already_on(device: str) -> bool:
    """MindSpore refuses `set_device` once any kernel has run in the process (a model built
    before training, in a notebook or a test); on the device it asked for, nothing changes."""
    import mindspore as ms

    return device == "CPU" and ms.get_context("device_target") == "CPU"


def configure(recipe: Recipe) -> None:
    """Set MindSpore's device, mode and seed; call once, before any cell is built."""
    import mindspore as ms

    from mindxh.parallel.context import cpu_refusal
    refusal = cpu_refusal(recipe)  # tensor/pipeline/expert/sequence parallel or zero on CPU
    if refusal:
        raise LaunchError(refusal)
    dp, devices = recipe.parallel.data_parallel, recipe.parallel.devices  # equal on CPU
    if devices != world_size():
        what = (f"parallel.data_parallel={dp}" if devices == dp else
                f"parallel data x tensor x pipeline = {devices} devices")
        raise LaunchError(
            f"{what} but this process runs in a job of {world_size()} rank(s); launch with "
            f"`mindxh launch --nproc {devices} RECIPE` or set parallel.data_parallel={world_size()}")
    try:
        ms.set_device(recipe.compile.device)
    except RuntimeError as exc:  # e.g. Ascend asked for on a machine without CANN
        if not _already_on(recipe.compile.device):
            first = str(exc).strip().splitlines()[0]
            raise LaunchError(f"compile.device={recipe.compile.device} is not usable here: "
                              f"{first}") from None
    if recipe.compile.device != "CPU":
        # an accelerator: every compile/parallel setting the recipe carries (Ascend graph
        # options, semi-auto parallel, pipeline stages, optimizer sharding), as
        # mindxh.parallel.context derives them; unverified on Ascend hardware from this project
        from mindspore.communication import init

        from mindxh.parallel.context import apply_context
        if world_size() > 1:
            init()
        apply_context(recipe)
        ms.set_seed(recipe.seed)
        return
    mode = ms.GRAPH_MODE if recipe.compile.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode, jit_config={"jit_level": recipe.compile.jit_level})
    if fuses_on_cpu(recipe):
        _cpu_graph_kernel(ms, recipe.compile.graph_kernel_flags)
    ms.set_seed(recipe.seed)
    if dp > 1:
        from mindspore.communication import init
        init()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                     gradients_mean=True, device_num=dp)


# OpenMP settings for graph-kernel fusion on CPU. AKG's fused kernels run on OpenMP threads
# beside MindSpore's own thread pool; with as many OpenMP threads as cores the two contend and
# the fused step is slower than the unfused one (medium, 2 cores: 722 vs 580 ms), with one
# OpenMP thread it is faster (473 ms; docs/performance.md). libgomp reads OMP_NUM_THREADS once,
# when it loads (at `import mindspore`), so it must be in the environment before that.
FUSED_CPU_ENV = {"OMP_NUM_THREADS": "1"}


def fuses_on_cpu(recipe: Recipe) -> bool:
    c = recipe.compile
    return c.device == "CPU" and c.mode == "graph" and bool(c.enable_graph_kernel)


def prepare_process(recipe: Recipe) -> None:
    """Call before MindSpore is imported: set what must be in the environment by then
    (FUSED_CPU_ENV when the recipe fuses kernels on CPU), unless the user set it already."""
    if not fuses_on_cpu(recipe):
        return
    for key, value in FUSED_CPU_ENV.items():
        if not os.environ.get(key) and "mindspore" not in sys.modules:  # unset or empty
            os.environ[key] = value


# AKG cannot build a Select whose condition is one flag for a whole tensor (AdamW's
# non-finite guard): such Selects stay plain kernels
CPU_GRAPH_KERNEL_FLAGS = "--disable_cluster_ops=Select"


def graph_kernel_cache() -> str:
    """Where AKG keeps the kernels it compiles (else `akg_kernel_meta/` in the working
    directory). Kept between runs: a warm cache saves most of the first step's compilation."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mindxh", "graph_kernel")


def _cpu_graph_kernel(ms, flags: str | None) -> None:
    """Graph-kernel fusion on CPU: MindSpore's AKG compiles chains of element-wise ops and
    reductions into one kernel each (about 1.4x the train step on one core, docs/performance.md).
    `jit_level` O1 does not turn it on for CPU; `enable_graph_kernel` does."""
    import importlib.util

    if importlib.util.find_spec("decorator") is None:  # AKG's TVM imports it; the error is opaque
        raise LaunchError("compile.enable_graph_kernel on CPU needs the `decorator` package "
                          "(MindSpore's AKG compiler imports it): pip install decorator")
    unset = {k: v for k, v in FUSED_CPU_ENV.items() if os.environ.get(k) != v}
    if unset:
        logging.getLogger(__name__).warning(
            "graph-kernel fusion on CPU runs fastest with %s set before MindSpore is imported "
            "(the `mindxh` commands do this); here %s: expect a slower step (fused kernels' "
            "OpenMP threads contend with MindSpore's)",
            " ".join(f"{k}={v}" for k, v in unset.items()),
            ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in unset))
    # AKG reads its CPU tiling repository (an empty JSON shipped inside MindSpore) only from
    # under AKG_WHITE_LIST_PATH, else the working directory; elsewhere it prints "Please set
    # tiling repo path ..." once per fused kernel (254 lines in one tiny X1 pipeline)
    os.environ.setdefault("AKG_WHITE_LIST_PATH", os.path.join(os.path.dirname(ms.__file__), "_akg"))
    cache = graph_kernel_cache()
    os.makedirs(cache, exist_ok=True)
    ms.set_context(enable_graph_kernel=True, compile_cache_path=cache,
                   graph_kernel_flags=" ".join(f for f in (CPU_GRAPH_KERNEL_FLAGS, flags) if f))


def rank() -> int:
    if world_size() == 1:
        return 0
    from mindspore.communication import get_rank
    return get_rank()


def barrier() -> None:
    """Wait for every rank (no-op on one rank); e.g. rank 0 writes a shared file, then all read it."""
    if world_size() > 1:
        from mindspore import mint
        mint.distributed.barrier()
