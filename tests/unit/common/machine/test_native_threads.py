"""One BLAS thread per service (common.machine.native_threads), applied at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.machine.native_threads import DEFAULT_BLAS_THREADS, blas_threads_setting

REPO = Path(__file__).resolve().parents[4]

# In a child process (the limit is process-wide): numpy loaded first, as a
# service's modules load it, then the limit; then one product the size of
# Whisper's mel filter bank times a 30 s spectrogram, twice, and the CPU time
# the process spends in the 0.3 s after the second (OpenBLAS's idle threads
# spin there; the first product after the limit wakes them once more).
_CHILD = """
import json, os, sys, time
import numpy as np
from threadpoolctl import threadpool_info
from common.machine.native_threads import limit_blas_threads
environ = dict(json.loads(sys.argv[1]))
applied = limit_blas_threads(environ)
blas = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
filters, power = np.ones((80, 201), np.float32), np.ones((201, 3000), np.float32)
filters @ power
time.sleep(0.3)
filters @ power
started = time.process_time()
time.sleep(0.3)
print(json.dumps({"applied": applied, "blas": blas, "idle_cpu_s": time.process_time() - started,
                  "openblas_variable": environ.get("OPENBLAS_NUM_THREADS")}))
"""


def _child(env: dict[str, str]) -> dict[str, Any]:
    clean = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(env)], capture_output=True, text=True, check=True, cwd=REPO, env=clean
    )
    return json.loads(output.stdout)


def test_blas_gets_one_thread_and_no_core_spins_after_a_product() -> None:
    limited = _child({})
    assert limited["applied"] == DEFAULT_BLAS_THREADS == 1
    assert limited["blas"] and set(limited["blas"]) == {1}
    assert limited["openblas_variable"] == "1"  # for libraries loaded later and children
    assert limited["idle_cpu_s"] < 0.05


def test_zero_leaves_the_library_its_own_threads() -> None:
    untouched = _child({"SUBTITLER_BLAS_THREADS": "0"})
    assert untouched["applied"] is None
    assert untouched["openblas_variable"] is None


def test_an_operators_own_openblas_variable_wins_unless_the_setting_is_given() -> None:
    operators = _child({"OPENBLAS_NUM_THREADS": "4"})
    assert (operators["applied"], operators["openblas_variable"]) == (None, "4")
    both = _child({"SUBTITLER_BLAS_THREADS": "2", "OPENBLAS_NUM_THREADS": "4"})
    assert (both["applied"], both["openblas_variable"], set(both["blas"])) == (2, "2", {2})


def test_a_bad_setting_falls_back_to_the_default() -> None:
    assert blas_threads_setting({"SUBTITLER_BLAS_THREADS": "many"}) == DEFAULT_BLAS_THREADS
    assert blas_threads_setting({"SUBTITLER_BLAS_THREADS": "-2"}) == DEFAULT_BLAS_THREADS
    assert blas_threads_setting({"SUBTITLER_BLAS_THREADS": " 3 "}) == 3
