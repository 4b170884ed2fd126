"""Where computation runs: choosing a device, finding the device of a module, and what this CPU can do.

Inference, training and the launcher all ask these functions, so "auto", a missing GPU and the CPU's bf16
support are decided in one place.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

from .errors import OptionError

__all__ = ["ISA_CAP_ENV", "cpu_flags", "cpu_has_amx_bf16", "cpu_has_native_bf16", "cpu_isa_cap", "cpu_model",
           "module_device", "resolve_device"]

#: oneDNN's cap on the instruction sets its kernels use (``AVX2``, ``AVX512_CORE``, ``AVX512_CORE_BF16``, …):
#: torch's and OpenVINO's CPU kernels both honour it, so a capped machine is, for inference, a CPU without the
#: extensions above the cap — which is how a CPU without AMX can be measured on one that has it.
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
#: Where Linux lists the CPU's model and feature flags; a module attribute so tests can put another kind of CPU here.
CPUINFO_PATH = "/proc/cpuinfo"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise OptionError("device", f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", "CUDA was requested but no CUDA GPU is available; use cpu or auto")
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); CPU for a module holding neither."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first ``name : value`` line of ``/proc/cpuinfo`` (``None`` where there is none)."""
    try:
        with open(CPUINFO_PATH, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_isa_cap() -> str | None:
    """The instruction-set cap oneDNN is given (:data:`ISA_CAP_ENV`, or its older name ``DNNL_MAX_CPU_ISA``),
    upper-cased; ``None`` when there is none (``ALL`` and ``DEFAULT`` are none)."""
    cap = (os.environ.get(ISA_CAP_ENV) or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return None if cap in ("", "ALL", "DEFAULT") else cap


def _flags_above(cap: str) -> tuple[str, ...]:
    """Prefixes of the ``/proc/cpuinfo`` flags that oneDNN's ISA ``cap`` forbids."""
    if "AMX" in cap:
        return ()
    if not cap.startswith(("AVX512", "AVX10")):  # SSE41, AVX, AVX2, AVX2_VNNI…: no AVX-512 at all
        return ("avx512", "amx")
    if cap == "AVX512_CORE":
        return ("amx", "avx512_bf16", "avx512_fp16", "avx512_vnni")
    if cap == "AVX512_CORE_VNNI":
        return ("amx", "avx512_bf16", "avx512_fp16")
    if cap == "AVX512_CORE_BF16":
        return ("amx", "avx512_fp16")
    return ("amx",)


@functools.lru_cache(maxsize=4)
def _cpu_flags(cap: str | None) -> frozenset[str]:
    flags = (_cpuinfo_field("flags") or "").split()
    above = _flags_above(cap) if cap else ()
    return frozenset(flag for flag in flags if not flag.startswith(above))


def cpu_flags() -> frozenset[str]:
    """The feature flags of this CPU as ``/proc/cpuinfo`` lists them (empty where it cannot be read), less those
    above oneDNN's instruction-set cap (:func:`cpu_isa_cap`), which no kernel may use."""
    return _cpu_flags(cpu_isa_cap())


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``), else what the platform says, else ``"unknown"``."""
    import platform

    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (AVX-512 BF16 or AMX), per ``/proc/cpuinfo``."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tiles: the one kind of CPU where bf16 inference was measured faster than fp32
    (AVX-512 BF16 alone was slower on an AMD EPYC)."""
    return "amx_bf16" in cpu_flags()
