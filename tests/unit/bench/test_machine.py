"""bench/machine.py: what CTranslate2, MKL and oneDNN say they run, read and described."""

from __future__ import annotations

import pytest

from bench.machine import CtranslateBackends, describe_backends, parse_probe_log, probe_ctranslate2, short_isa

MKL_LOG = """\
[ctranslate2] [thread 5975] [info] CPU: GenuineIntel (SSE4.1=true, AVX=true, AVX2=true, AVX512=true)
[ctranslate2] [thread 5975] [info]  - Selected ISA: AVX2
[ctranslate2] [thread 5975] [info]  - Use Intel MKL: true
[ctranslate2] [thread 5975] [info]  - SGEMM backend: MKL (packed: true)
[ctranslate2] [thread 5975] [info]  - GEMM_S16 backend: MKL (packed: true)
[ctranslate2] [thread 5975] [info]  - GEMM_S8 backend: MKL (packed: true, u8s8 preferred: true)
MKL_VERBOSE oneMKL 2025 Update 3 Product build 20251007 for Intel(R) 64 architecture Intel(R) Advanced Vector \
Extensions 512 (Intel(R) AVX-512) with support for INT8, BF16, FP16 (limited) instructions, and Intel(R) Advanced \
Matrix Extensions (Intel(R) AMX) with INT8 and BF16, Lnx 2.60GHz ilp64 gnu_thread
MKL_VERBOSE GEMM_S8U8S32_PACK_GET_SIZE(B,1,51864,384) 100.54us CNR:OFF Dyn:1 FastMM:1 TID:0  NThr:2
[ctranslate2] [thread 5975] [info]  - Selected compute type: int8_float32
"""
DNNL_LOG = """\
[info]  - Selected ISA: AVX512
[info]  - SGEMM backend: DNNL (packed: false)
[info]  - GEMM_S8 backend: DNNL (packed: false, u8s8 preferred: true)
onednn_verbose,info,oneDNN v3.1.1 (commit 7f59ae114cba0f7d5fb1fe6099142e4c3b0037c8)
onednn_verbose,info,cpu,isa:Intel AVX2
"""


def test_mkl_log_is_read() -> None:
    backends = parse_probe_log(MKL_LOG)
    assert backends == CtranslateBackends(
        isa="AVX2",
        sgemm_backend="MKL",
        gemm_s8_backend="MKL",
        mkl_isa="AVX-512+VNNI+AMX",
        compute_type="int8_float32",
    )
    assert backends.gemm_isa == "AVX-512+VNNI+AMX"


def test_dnnl_log_is_read() -> None:
    backends = parse_probe_log(DNNL_LOG)
    assert (backends.isa, backends.sgemm_backend, backends.gemm_s8_backend) == ("AVX512", "DNNL", "DNNL")
    assert backends.gemm_isa == "AVX2"


@pytest.mark.parametrize(
    ("description", "short"),
    [
        ("Intel(R) Advanced Vector Extensions 2 (Intel(R) AVX2) enabled processors", "AVX2"),
        (
            "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit "
            "integer support",
            "AVX-512+VNNI+AMX",
        ),
        ("Intel AVX2 with Intel DL Boost", "AVX2+VNNI"),
        ("", ""),
    ],
)
def test_short_isa(description: str, short: str) -> None:
    assert short_isa(description) == short


def test_description_says_what_forced_what() -> None:
    backends = parse_probe_log(MKL_LOG)
    own = describe_backends(backends, {})
    assert own == (
        "CTranslate2 ISA AVX2 (its own choice), SGEMM MKL, GEMM_S8 MKL running AVX-512+VNNI+AMX, int8_float32"
    )
    forced = describe_backends(backends, {"CT2_FORCE_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"})
    assert "(forced by CT2_FORCE_CPU_ISA=AVX2)" in forced
    assert forced.endswith("[MKL_ENABLE_INSTRUCTIONS=AVX2]")
    failed = describe_backends(CtranslateBackends("", "", "", error="probe exited 1: boom"), {})
    assert failed == "CTranslate2 backends unknown (probe exited 1: boom)"


@pytest.mark.slow
def test_probe_runs_the_embedded_model() -> None:
    backends = probe_ctranslate2()
    assert not backends.error
    assert backends.isa and backends.gemm_s8_backend
