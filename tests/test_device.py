"""The CPU facts behind ``precision="auto"``, on CPUs this machine is not: a fake ``/proc/cpuinfo`` per CPU kind.

The rule (:func:`fcn_app.scoring.choose_precision`): bf16 on a CPU whose flags include ``amx_bf16`` (less what an
``ONEDNN_MAX_CPU_ISA`` cap forbids), fp32 on every other CPU — AVX-512 BF16 without AMX included — and fp32 for
ONNX Runtime; ``FCN_HEATMAP_PRECISION`` pins it; CUDA takes bf16 where supported, else fp16. Testing it through the
host's own flags would check one branch only, so each test writes the flags line of another kind of CPU.
"""

from __future__ import annotations

import logging

import pytest
import torch

import fcn_app.device as device
from fcn_app.device import ISA_CAP_ENV, cpu_flags, cpu_has_amx_bf16, cpu_has_native_bf16, cpu_isa_cap, cpu_model
from fcn_app.errors import OptionError
from fcn_app.scoring import PRECISION_ENV, ScoringOptions, choose_precision, resolve_precision, scoring_summary
from helpers_batch import tiny_fcn

_COMMON = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm pni ssse3 fma sse4_1 sse4_2 avx f16c"
#: Flags lines as ``/proc/cpuinfo`` prints them (abridged), one per CPU kind the rule tells apart.
SAPPHIRE_RAPIDS = (f"{_COMMON} avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 "
                   "avx512_fp16 amx_tile amx_int8")
ZEN4 = f"{_COMMON} avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni"  # AVX-512 BF16, no AMX
ICE_LAKE = f"{_COMMON} avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"  # AVX-512, no bf16
EPYC_AVX2 = f"{_COMMON} avx2"  # this project's AVX2-only CI machine


def _clear_caches() -> None:
    device._cpu_flags.cache_clear()
    cpu_model.cache_clear()


@pytest.fixture()
def fake_cpu(monkeypatch, tmp_path):
    """``fake_cpu(flags, model)`` makes fcn_app read a ``/proc/cpuinfo`` with that flags line (two processors, as
    the kernel writes it); ``fake_cpu(None)``, one it cannot read. Pins and ISA caps unset."""
    for name in (PRECISION_ENV, ISA_CAP_ENV, "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)

    def install(flags: str | None, model: str = "Fake CPU @ 2.00GHz") -> None:
        path = tmp_path / "cpuinfo"
        if flags is None:
            path.unlink(missing_ok=True)
        else:
            processor = f"vendor_id\t: Fake\nmodel name\t: {model}\nflags\t\t: {flags}\nbogomips\t: 4000.00\n"
            path.write_text(f"processor\t: 0\n{processor}\nprocessor\t: 1\n{processor}\n")
        monkeypatch.setattr(device, "CPUINFO_PATH", str(path))
        _clear_caches()

    yield install
    _clear_caches()  # the next test reads the real CPU again


@pytest.mark.parametrize("flags, auto", [(SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "fp32"), (ICE_LAKE, "fp32"),
                                         (EPYC_AVX2, "fp32")], ids=["amx", "avx512-bf16", "avx512", "avx2"])
def test_auto_precision_is_bf16_only_on_a_cpu_with_amx_bf16(fake_cpu, flags, auto):
    fake_cpu(flags)
    assert cpu_has_amx_bf16() == (auto == "bf16")
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags.split())
    for backend in ("torch", "openvino"):
        assert choose_precision("auto", "cpu", backend) == auto, backend
    assert choose_precision("auto", "cpu", "onnxruntime") == "fp32"  # ONNX Runtime's CPU provider: fp32 only
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if auto == "bf16" else None)
    for asked in ("fp32", "bf16", "fp16"):  # an explicit precision is never overruled by the flags
        assert choose_precision(asked, "cpu", "torch") == asked


def test_the_choice_and_the_flags_behind_it_are_reported(fake_cpu):
    fake_cpu(SAPPHIRE_RAPIDS, model="Intel(R) Xeon(R) Platinum 8488C")
    summary = scoring_summary("auto", "torch")
    assert summary["precision"] == "bf16" and summary["requested"] == {"backend": "torch", "precision": "auto"}
    assert summary["cpu"] == {"model": "Intel(R) Xeon(R) Platinum 8488C", "isa_cap": None,
                              "flags": ["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_fp16",
                                        "avx512_vnni", "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"]}
    assert ScoringOptions("auto", backend="torch").summary(tiny_fcn())["precision"] == "bf16"  # what scoring uses
    fake_cpu(EPYC_AVX2, model="AMD EPYC")
    summary = scoring_summary("auto", "torch")
    assert (summary["precision"], summary["cpu"]["model"], summary["cpu"]["flags"]) == ("fp32", "AMD EPYC", [])
    assert ScoringOptions("auto", backend="torch").summary(tiny_fcn())["precision"] == "fp32"


@pytest.mark.parametrize("cap, auto, forbidden", [
    ("AVX512_CORE_AMX", "bf16", ()),
    ("AVX512_CORE_BF16", "fp32", ("amx", "avx512_fp16")),
    ("AVX512_CORE", "fp32", ("amx", "avx512_bf16", "avx512_vnni", "avx512_fp16")),
    ("avx2", "fp32", ("amx", "avx512")),
    ("ALL", "bf16", ()),
])
def test_an_isa_cap_on_an_amx_cpu_chooses_as_the_cpu_below_the_cap(fake_cpu, monkeypatch, cap, auto, forbidden):
    fake_cpu(SAPPHIRE_RAPIDS)
    monkeypatch.setenv(ISA_CAP_ENV, cap)
    assert cpu_flags() == {flag for flag in SAPPHIRE_RAPIDS.split() if not flag.startswith(forbidden)}
    assert cpu_isa_cap() == (None if cap == "ALL" else cap.upper())
    assert choose_precision("auto", "cpu", "torch") == auto
    assert scoring_summary("auto", "openvino")["precision"] == auto


def test_the_pin_overrides_the_flags_both_ways(fake_cpu, monkeypatch):
    fake_cpu(SAPPHIRE_RAPIDS)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert choose_precision("auto", "cpu", "torch") == "fp32"
    fake_cpu(EPYC_AVX2)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert choose_precision("auto", "cpu", "torch") == "bf16"
    assert choose_precision("auto", "cpu", "onnxruntime") == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "int8")
    with pytest.raises(OptionError, match="FCN_HEATMAP_PRECISION='int8' is not a precision"):
        choose_precision("auto", "cpu", "torch")


def test_an_unreadable_cpuinfo_is_a_cpu_without_extensions(fake_cpu):
    fake_cpu(None)
    assert cpu_flags() == frozenset() and not cpu_has_native_bf16()
    assert choose_precision("auto", "cpu", "torch") == "fp32"
    assert cpu_model()  # what the platform says, else "unknown"


@pytest.mark.parametrize("flags, warned", [(EPYC_AVX2, True), (ICE_LAKE, True), (ZEN4, False),
                                           (SAPPHIRE_RAPIDS, False)], ids=["avx2", "avx512", "avx512-bf16", "amx"])
def test_explicit_bf16_warns_where_the_cpu_would_emulate_it(fake_cpu, caplog, flags, warned):
    fake_cpu(flags)
    with caplog.at_level(logging.WARNING, logger="fcn_app.scoring"):
        assert resolve_precision("bf16", "cpu") is torch.bfloat16
    assert any("bf16 will be emulated and slow" in record.message for record in caplog.records) == warned


@pytest.mark.parametrize("supported, auto", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_follows_the_gpu_not_the_cpu_flags(fake_cpu, monkeypatch, supported, auto):
    fake_cpu(SAPPHIRE_RAPIDS if auto == "fp16" else EPYC_AVX2)  # the CPU says the opposite
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert choose_precision("auto", "cuda", "torch") == auto
    assert choose_precision("auto", "cuda", "onnxruntime") == "fp32"
