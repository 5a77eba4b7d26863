"""Accelerator catalogue: peak FLOP/s, memory and links per device model, each figure with its
source (most collected in shared/notes/hardware.md; H = vendor, M = derived/secondary,
L = single secondary, U = assumption).

Data, not code that measures: recipes validate `metrics.device` against `PEAK_FLOPS`, MFU
divides by it, and `mindxh plan` reads whole `HardwareProfile`s. The CPU's real peak is
measured by `mindxh.utils.flops`; its profile here carries the nominal figure of the notes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["HardwareProfile", "PEAK_FLOPS", "PROFILES", "Peak", "canonical_device",
           "lookup_peak", "lookup_profile", "normalise", "peak_flops"]

GiB = 2**30
GB = 1e9  # link and memory bandwidths are decimal (vendor) units


@dataclass(frozen=True)
class Peak:
    """Dense (no sparsity) peak FLOP/s of one device for one dtype."""

    device: str
    dtype: str
    flops: float
    source: str


@dataclass(frozen=True, eq=False)
class HardwareProfile:
    """One device model as the planner sees it. Bandwidths are one way, per device, in B/s;
    `intra_peer_bandwidth` is set for a full mesh (910B HCCS: 28 GB/s to any one peer, so a
    group of n uses (n-1) links) and None for a switched fabric (NVLink, UB)."""

    name: str
    label: str
    peak: dict[str, float]
    hbm_bytes: float
    hbm_bandwidth: float
    intra_link: str
    intra_bandwidth: float
    intra_peer_bandwidth: Optional[float]
    inter_link: str
    inter_bandwidth: float
    scale_up: int  # devices in one scale-up (HCCS / NVLink / UB) domain
    gemm_efficiency: float  # achievable fraction of peak on large matmuls
    attention_efficiency: float  # fused (flash) attention kernels, forward + backward
    comm_buffer_bytes: float  # reserved per communication group (HCCL / NCCL buffers)
    runtime_reserve_bytes: float  # driver, runtime, kernels: never available to the model
    sources: dict[str, str] = field(default_factory=dict)

    def peak_flops(self, dtype: str) -> float:
        key = _DTYPE_ALIASES.get(normalise(dtype), normalise(dtype))
        if key not in self.peak:
            raise ValueError(f"no {dtype} peak for {self.label}; known: {sorted(self.peak)}")
        return self.peak[key]

    def link_bandwidth(self, group: int, intra: bool) -> float:
        """Per-device bandwidth a collective over `group` devices gets on the chosen link."""
        if not intra:
            return self.inter_bandwidth
        if self.intra_peer_bandwidth is None:
            return self.intra_bandwidth
        return min(self.intra_bandwidth, max(group - 1, 1) * self.intra_peer_bandwidth)


_NOTES = "shared/notes/hardware.md"
_A2 = dict(  # Atlas 800T A2 server: 8 x 910B1/B2/B3
    hbm_bytes=64 * GiB, hbm_bandwidth=1.6e12, intra_link="HCCS full mesh",
    intra_bandwidth=196 * GB, intra_peer_bandwidth=28 * GB, inter_link="RoCE 200 Gb/s",
    inter_bandwidth=25 * GB, scale_up=8, gemm_efficiency=0.91, attention_efficiency=0.55,
    comm_buffer_bytes=400e6, runtime_reserve_bytes=2 * GiB,
)
_A2_SOURCES = {
    "hbm": f"64 GB HBM, 1.6 TB/s per NPU, Atlas 800T A2 ({_NOTES}), H",
    "intra": f"HCCS full mesh of 8: 196 GB/s one way per NPU, 28 GB/s to one peer ({_NOTES}), H",
    "inter": f"RoCE 200 Gb/s = 25 GB/s per NPU ({_NOTES}), H",
    "scale_up": "8 NPUs per Atlas 800T A2 server, H",
    "gemm_efficiency": f"measured BF16 GEMM ~322-328 of 354 TFLOP/s ~ 0.91 ({_NOTES}), M",
    "attention_efficiency": "FlashAttentionScore not published; assumed like FlashAttention-2 "
                            "on A100 (Dao 2023: 50-73% forward, less backward), U",
    "comm_buffer": "HCCL_BUFFSIZE default 200 MB, 2x per communication domain (send and "
                   "receive): CANN environment-variable reference, H",
    "runtime_reserve": "estimate: CANN runtime, kernels, workspace (mindformers leaves 5-6 GB "
                       "of 64 outside max_device_memory), U",
}
_NV = dict(comm_buffer_bytes=200e6, runtime_reserve_bytes=1 * GiB, scale_up=8,
           intra_peer_bandwidth=None)
_NV_SOURCES = {
    "attention_efficiency": "FlashAttention-2 on A100: 50-73% forward, less backward (Dao "
                            "2023); on H100 FA2 ~35-50%, FA3 up to 75% forward (Shah 2024), M",
    "scale_up": "8 GPUs per HGX/DGX board, H",
    "comm_buffer": "estimate for NCCL channel buffers per communicator, U",
    "runtime_reserve": "estimate: CUDA context, cuBLAS workspace, U",
}


def _cann(chip: str) -> str:
    return f"CANN chip config {chip}"


PROFILES: dict[str, HardwareProfile] = {p.name: p for p in [
    HardwareProfile(
        "ascend-910b1", "Ascend 910B1", dict(bf16=364e12, fp16=376e12), **_A2,
        sources={**_A2_SOURCES, "peak": _cann("Ascend910B1.ini") + ": 24 AI cores x 1.85 GHz "
                 "x 4096 MAC x 2 (354 at 1.80 GHz), H"}),
    HardwareProfile(
        "ascend-910b2", "Ascend 910B2", dict(bf16=354e12, fp16=376e12, fp32=99.5e12), **_A2,
        sources={**_A2_SOURCES, "peak": _cann("Ascend910B2.ini") + "; also used by MindSpeed-LLM "
                 "and verl flops counters, H"}),
    HardwareProfile(
        "ascend-910b3", "Ascend 910B3", dict(bf16=295e12, fp16=313e12, fp32=83e12), **_A2,
        sources={**_A2_SOURCES, "peak": _cann("Ascend910B3.ini") + ": 20 cores x 1.8 GHz, H"}),
    HardwareProfile(
        "ascend-910b4", "Ascend 910B4", dict(bf16=246e12, fp16=280e12, fp32=75e12),
        **{**_A2, "hbm_bytes": 32 * GiB, "hbm_bandwidth": 0.8e12, "intra_link": "PCIe 4.0 x16",
           "intra_bandwidth": 32 * GB, "intra_peer_bandwidth": None},
        sources={**_A2_SOURCES, "peak": _cann("Ascend910B4.ini") + ": 20 cores x 1.5 GHz, H",
                 "hbm": f"32 GB, 0.8 TB/s ({_NOTES}), H",
                 "intra": "PCIe variants: PCIe 4.0 x16 ~32 GB/s one way assumed, U",
                 "inter": "not published; RoCE 200 Gb/s assumed like A2 servers, U"}),
    HardwareProfile(
        "ascend-910c-die", "Ascend 910C (one die)", dict(bf16=354e12, fp16=376e12, fp32=99.5e12),
        **{**_A2, "hbm_bytes": 64 * GiB, "intra_link": "Unified Bus", "intra_peer_bandwidth": None,
           "inter_link": "RoCE 400 Gb/s per package", "scale_up": 384},
        sources={**_A2_SOURCES,
                 "peak": _cann("Ascend910_93xx.ini") + " (msmodeling A3_752T_128G_DIE): one die; "
                 "a 910C package is 2 dies, each a MindSpore device, H",
                 "hbm": f"128 GB and 3.2 TB/s per package = 64 GB, 1.6 TB/s per die ({_NOTES}), H",
                 "intra": f"Unified Bus ~196 GB/s one way per die, switched ({_NOTES}), M",
                 "inter": f"RoCE 400 Gb/s per package = 25 GB/s per die ({_NOTES}), M",
                 "scale_up": "CloudMatrix384 / Atlas 900 A3 SuperPoD: 384 NPUs in one UB domain "
                             "(counted as 384 devices, conservative), M",
                 "gemm_efficiency": "assumed as measured on 910B (same AI cores), U"}),
    HardwareProfile(
        "nvidia-h100-sxm", "NVIDIA H100 SXM", dict(bf16=989e12, fp16=989e12, fp32=67e12,
                                                   tf32=495e12),
        hbm_bytes=80 * GiB, hbm_bandwidth=3.35e12, intra_link="NVLink 4", intra_bandwidth=450 * GB,
        inter_link="400 Gb/s IB/RoCE", inter_bandwidth=50 * GB, gemm_efficiency=0.75,
        attention_efficiency=0.5,
        **_NV, sources={**_NV_SOURCES, "peak": "NVIDIA H100 SXM datasheet, dense, H",
                 "hbm": "80 GB, 3.35 TB/s (datasheet), H",
                 "intra": "NVLink 900 GB/s bidirectional = 450 one way, H",
                 "inter": "one 400 Gb/s NIC per GPU, H",
                 "gemm_efficiency": "large BF16 cuBLAS GEMMs reach ~700-800 of 989 TFLOP/s, M"}),
    HardwareProfile(
        "nvidia-h800-sxm", "NVIDIA H800 SXM", dict(bf16=989e12, fp16=989e12, fp32=67e12),
        hbm_bytes=80 * GiB, hbm_bandwidth=3.35e12, intra_link="NVLink (export)",
        intra_bandwidth=200 * GB, inter_link="400 Gb/s IB/RoCE", inter_bandwidth=50 * GB,
        gemm_efficiency=0.75, attention_efficiency=0.5, **_NV,
        sources={**_NV_SOURCES, "peak": "MindSpeed-LLM / verl flops counter tables, M-H",
                 "hbm": "80 GB, 3.35 TB/s, H", "intra": "NVLink 400 GB/s bidirectional, H",
                 "inter": "400 Gb/s per GPU, M", "gemm_efficiency": "as H100 (same die), M"}),
    HardwareProfile(
        "nvidia-h20", "NVIDIA H20", dict(bf16=148e12, fp16=148e12, fp32=44e12),
        hbm_bytes=96 * GiB, hbm_bandwidth=4.0e12, intra_link="NVLink 4", intra_bandwidth=450 * GB,
        inter_link="400 Gb/s (assumed)", inter_bandwidth=50 * GB, gemm_efficiency=0.9,
        attention_efficiency=0.6, **_NV,
        sources={**_NV_SOURCES, "peak": "MindSpeed-LLM / verl flops counter tables, M-H",
                 "hbm": "96 GB, 4.0 TB/s, M", "intra": "NVLink 900 GB/s bidirectional, M",
                 "inter": "deployment-dependent; 400 Gb/s per GPU assumed, U",
                 "gemm_efficiency": "low peak vs bandwidth: large GEMMs near peak, assumed, U"}),
    HardwareProfile(
        "nvidia-a100-sxm", "NVIDIA A100 SXM", dict(bf16=312e12, fp16=312e12, fp32=19.5e12,
                                                   tf32=156e12),
        hbm_bytes=80 * GiB, hbm_bandwidth=2.0e12, intra_link="NVLink 3", intra_bandwidth=300 * GB,
        inter_link="200 Gb/s IB/RoCE", inter_bandwidth=25 * GB, gemm_efficiency=0.85,
        attention_efficiency=0.55, **_NV,
        sources={**_NV_SOURCES, "peak": "NVIDIA A100 SXM datasheet, dense, H",
                 "hbm": "80 GB, 2.0 TB/s, H", "intra": "NVLink 600 GB/s bidirectional, H",
                 "inter": "200 Gb/s per GPU, H",
                 "gemm_efficiency": "large BF16 GEMMs reach ~260-280 of 312 TFLOP/s, M"}),
]}


def _cpu_profile() -> HardwareProfile:
    """This machine: memory from the OS; peak the nominal GEMM rate of the notes (a training
    run measures the real one with mindxh.utils.flops)."""
    try:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        memory = 24 * GiB
    cores = os.cpu_count() or 1
    return HardwareProfile(
        "cpu", f"this CPU ({cores} cores)", dict(fp32=88e9, fp16=88e9), hbm_bytes=memory,
        hbm_bandwidth=20e9, intra_link="shared memory (mccl)", intra_bandwidth=5 * GB,
        intra_peer_bandwidth=None, inter_link="TCP", inter_bandwidth=1 * GB, scale_up=cores,
        gemm_efficiency=1.0, attention_efficiency=1.0, comm_buffer_bytes=0.0,
        runtime_reserve_bytes=1 * GiB,
        sources={"peak": "numpy float32 GEMM 2048^3 on the project's 2-core EPYC, ~88 GFLOP/s "
                         "(shared/notes/mindspore-cpu.md); the probe measures this machine's",
                 "hbm": "physical memory reported by the OS; ~20 GB/s DRAM bandwidth assumed, U",
                 "intra": "msrun workers on one host over mccl, ~5 GB/s assumed, U",
                 "inter": "TCP, assumed, U", "scale_up": "os.cpu_count()",
                 "gemm_efficiency": "the peak is itself a measured GEMM rate",
                 "attention_efficiency": "no fused attention on CPU: plain matmuls",
                 "comm_buffer": "none", "runtime_reserve": "interpreter and MindSpore, U"})


# Per device, dense, no sparsity; canonical device -> dtype -> Peak (accelerators only).
PEAK_FLOPS: dict[str, dict[str, Peak]] = {
    name: {dtype: Peak(name, dtype, flops, p.sources["peak"]) for dtype, flops in p.peak.items()}
    for name, p in PROFILES.items()
}

# Normalised alias -> canonical key. "Ascend 910B" means the 910B2 SKU, "910C" one die.
_DEVICE_ALIASES = {
    "ascend910b": "ascend-910b2", "910b": "ascend-910b2", "910b1": "ascend-910b1",
    "910b2": "ascend-910b2", "910b2c": "ascend-910b2", "910b3": "ascend-910b3",
    "910b4": "ascend-910b4", "ascend910c": "ascend-910c-die", "910c": "ascend-910c-die",
    "h100": "nvidia-h100-sxm", "h100sxm": "nvidia-h100-sxm", "h800": "nvidia-h800-sxm",
    "h800sxm": "nvidia-h800-sxm", "h20": "nvidia-h20", "a100": "nvidia-a100-sxm",
    "a100sxm": "nvidia-a100-sxm",
}

_DTYPE_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "tensorfloat32": "tf32",
}


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_device(device: str) -> str:
    key = normalise(device)
    by_norm = {normalise(name): name for name in PEAK_FLOPS}
    if key in by_norm:
        return by_norm[key]
    for alias in (key, key.removeprefix("nvidia"), key.removeprefix("ascend")):
        if alias in _DEVICE_ALIASES:
            return _DEVICE_ALIASES[alias]
    raise KeyError(f"unknown device {device!r}; known devices: {sorted(PEAK_FLOPS)} or 'cpu'")


def lookup_profile(device: str) -> HardwareProfile:
    """The profile for a device name or alias (910B, 910b3, H100, cpu...); KeyError if unknown."""
    if normalise(device) == "cpu":
        return _cpu_profile()
    return PROFILES[canonical_device(device)]


def lookup_peak(device: str, dtype: str) -> Peak:
    """The table entry for ``device``/``dtype`` (names are case/punctuation tolerant)."""
    entries = PEAK_FLOPS[canonical_device(device)]
    dkey = normalise(dtype)
    dkey = _DTYPE_ALIASES.get(dkey, dkey)
    if dkey not in entries:
        raise ValueError(
            f"no peak for dtype {dtype!r} on {device!r}; known dtypes: {sorted(entries)}"
        )
    return entries[dkey]


def peak_flops(device: str, dtype: str) -> float:
    """Dense peak FLOP/s; KeyError for unknown device, ValueError for unknown dtype."""
    return lookup_peak(device, dtype).flops
