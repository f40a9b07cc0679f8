"""What every benchmark's first line says about the machine (`machine_line`).

Speed ratios depend on the CPU and on the kernels CTranslate2 really runs,
which the CPU flags alone do not tell: CTranslate2 picks its own instruction
set for its own kernels (AVX2 on a CPU with AVX-512 unless
CT2_FORCE_CPU_ISA says otherwise), while its matrix products go to a GEMM
backend (Intel MKL or oneDNN) that dispatches on its own (AVX-512 with AMX on
the same CPU, unless MKL_ENABLE_INSTRUCTIONS or ONEDNN_MAX_CPU_ISA caps it).
`probe_ctranslate2` asks the libraries themselves: it loads the embedded
model in a child process with this process's environment plus their verbose
switches (CT2_VERBOSE, MKL_VERBOSE, ONEDNN_VERBOSE), encodes 30 s of silence
so that the GEMM backend runs, and reads what they log.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.machine.hardware import detect_hardware
from common.speech.whisper_models import EMBEDDED_TINY_EN

# The child: load the model as the services do (int8 on CPU) and run one encode.
_PROBE_CODE = """
import sys
import ctranslate2
import numpy as np
from common.speech.whisper_models import ModelLoadOptions, resolve_model_path

path = resolve_model_path(sys.argv[1], ModelLoadOptions(device="cpu"))
model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=1)
model.encode(ctranslate2.StorageView.from_array(np.zeros((1, 80, 3000), dtype=np.float32)))
"""
_VERBOSE_ENV = {"CT2_VERBOSE": "1", "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}
# Variables that change what is dispatched, shown where they are set.
_ISA_VARIABLES = (
    "CT2_FORCE_CPU_ISA",
    "CT2_USE_MKL",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
)


@dataclass(frozen=True)
class CtranslateBackends:
    """What CTranslate2 and its GEMM backend say they run; "" where they did not say."""

    # The instruction set of CTranslate2's own kernels ("AVX2").
    isa: str
    # Its backends for float32 and int8 matrix products ("MKL", "DNNL").
    sgemm_backend: str
    gemm_s8_backend: str
    # The instruction sets MKL and oneDNN dispatch to, shortened ("AVX-512+VNNI+AMX").
    mkl_isa: str = ""
    dnnl_isa: str = ""
    # "int8_float32"
    compute_type: str = ""
    # Why there is nothing to show (the probe failed); "" when it ran.
    error: str = ""

    @property
    def gemm_isa(self) -> str:
        """The instruction set of the int8 matrix products, the bulk of the work."""
        return {"MKL": self.mkl_isa, "DNNL": self.dnnl_isa}.get(self.gemm_s8_backend, "")


def parse_probe_log(log: str) -> CtranslateBackends:
    """CTranslate2's (CT2_VERBOSE), MKL's and oneDNN's log lines, read."""

    def found(pattern: str) -> str:
        match = re.search(pattern, log)
        return match[1].strip() if match else ""

    return CtranslateBackends(
        isa=found(r"Selected ISA: (\S+)"),
        sgemm_backend=found(r"SGEMM backend: (\S+)"),
        gemm_s8_backend=found(r"GEMM_S8 backend: (\S+)"),
        mkl_isa=short_isa(found(r"MKL_VERBOSE (?:oneMKL|Intel\(R\) MKL).*? architecture (.*?)(?:, Lnx|, Win|$)")),
        dnnl_isa=short_isa(found(r"(?:onednn|dnnl)_verbose,info,cpu,isa:(.*)")),
        compute_type=found(r"Selected compute type: (\S+)"),
    )


def short_isa(description: str) -> str:
    """An MKL or oneDNN instruction-set sentence in a few letters:
    "Intel AVX-512 with ... Intel DL Boost ... and Intel AMX ..." -> "AVX-512+VNNI+AMX"."""
    if not description:
        return ""
    names = []
    if re.search(r"AVX-?512|Vector Extensions 512", description):
        names.append("AVX-512")
    elif re.search(r"AVX2|Vector Extensions 2", description):
        names.append("AVX2")
    elif "AVX" in description or "Advanced Vector Extensions" in description:
        names.append("AVX")
    elif "SSE4" in description:
        names.append("SSE4")
    if re.search(r"DL Boost|VNNI|\bINT8\b", description):
        names.append("VNNI")
    if re.search(r"\bAMX\b|Matrix Extensions", description):
        names.append("AMX")
    return "+".join(names) or description


@functools.cache
def probe_ctranslate2(model: str = EMBEDDED_TINY_EN, timeout_s: float = 120.0) -> CtranslateBackends:
    """What CTranslate2 dispatches to in a child process with this process's
    environment (so CT2_FORCE_CPU_ISA, CT2_USE_MKL, MKL_ENABLE_INSTRUCTIONS
    and ONEDNN_MAX_CPU_ISA count); never raises: a failure is in `error`."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE, model],
            env={**os.environ, **_VERBOSE_ENV},
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return CtranslateBackends("", "", "", error=f"probe did not run: {error}")
    backends = parse_probe_log(result.stdout)
    if result.returncode != 0 or not backends.isa:
        last_lines = [line for line in result.stdout.splitlines() if line.strip()][-1:]
        return CtranslateBackends("", "", "", error=f"probe exited {result.returncode}: {' '.join(last_lines)}")
    return backends


def describe_backends(backends: CtranslateBackends, env: Mapping[str, str] = os.environ) -> str:
    """One phrase, e.g. "CTranslate2 ISA AVX2 (its own choice), SGEMM MKL, GEMM_S8 MKL running
    AVX-512+VNNI+AMX, int8_float32", with the variables that changed it in brackets."""
    if backends.error:
        return f"CTranslate2 backends unknown ({backends.error})"
    forced = env.get("CT2_FORCE_CPU_ISA")
    source = f"forced by CT2_FORCE_CPU_ISA={forced}" if forced else "its own choice"
    gemm = f"GEMM_S8 {backends.gemm_s8_backend}"
    if backends.gemm_isa:
        gemm += f" running {backends.gemm_isa}"
    settings = [f"{name}={env[name]}" for name in _ISA_VARIABLES if name != "CT2_FORCE_CPU_ISA" and env.get(name)]
    described = f"CTranslate2 ISA {backends.isa} ({source}), SGEMM {backends.sgemm_backend}, {gemm}"
    if backends.compute_type:
        described += f", {backends.compute_type}"
    if settings:
        described += f" [{', '.join(settings)}]"
    return described


def machine_line() -> str:
    """The CPU, what CTranslate2 runs on it, the CPUs usable and the memory:
    the ratios the benchmarks print depend on them (AVX-512 VNNI and AMX
    speed up the int8 products both sides share, which narrows what parallel
    workers gain)."""
    hardware = detect_hardware()
    fields = hardware.as_fields()
    return (
        f"{fields['cpus.model']}; {describe_backends(probe_ctranslate2())}; CPU vector {fields['cpus.vector']}; "
        f"{hardware.effective_cpus} CPUs; {fields['memory.effective']}"
    )


def print_machine_line() -> None:
    """The first line of every benchmark."""
    print(f"machine: {machine_line()}", flush=True)
