"""Threads of the BLAS library numpy (and scipy) call, limited at start.

OpenBLAS starts one thread per core and, after each call, keeps them
spinning for a while in case another comes. A service calls BLAS for small
products between its model's calls (Whisper's log-mel features are one
80x201 by 201x3000 product a chunk): the product takes 5 ms, but the spin
after it burns about 0.1 s of a core, a core the model workers need. On
this project's bench that was 0.4 CPU-seconds of a 10-minute job's ASR on a
two-core machine (`bench/end_to_end.py`). The services parallelise with
their own workers, so one BLAS thread each is the default;
`SUBTITLER_BLAS_THREADS` changes it (0 leaves the library's own choice, and
an operator's OPENBLAS_NUM_THREADS wins when the setting is unset).

Applied through threadpoolctl to the BLAS libraries already loaded, and
through OPENBLAS_NUM_THREADS to any loaded later in this process (a library
imported on first use) or in a child.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

from common.config import env_int_or_default

logger = logging.getLogger(__name__)

BLAS_THREADS_SETTING = "SUBTITLER_BLAS_THREADS"
DEFAULT_BLAS_THREADS = 1
# What OpenBLAS reads when it is loaded (numpy's, scipy's).
OPENBLAS_VARIABLE = "OPENBLAS_NUM_THREADS"


def blas_threads_setting(env: Mapping[str, str]) -> int:
    """SUBTITLER_BLAS_THREADS as a count (default 1; 0: the library's own)."""
    return env_int_or_default(env, BLAS_THREADS_SETTING, DEFAULT_BLAS_THREADS, minimum=0)


def limit_blas_threads(env: MutableMapping[str, str] | None = None) -> int | None:
    """Limits BLAS to `SUBTITLER_BLAS_THREADS` threads; returns the limit
    applied, None when it is left to the library: the setting is 0, or
    unset while the operator set OpenBLAS's own OPENBLAS_NUM_THREADS (which
    then wins, as glibc's variables do over the malloc settings). Never
    fails: without threadpoolctl only the variable is set."""
    env = os.environ if env is None else env
    if not env.get(BLAS_THREADS_SETTING, "").strip() and env.get(OPENBLAS_VARIABLE, "").strip():
        return None
    threads = blas_threads_setting(env)
    if threads == 0:
        return None
    env[OPENBLAS_VARIABLE] = str(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logger.warning("threadpoolctl is not installed; BLAS libraries already loaded keep their threads")
        return threads
    try:
        threadpool_limits(limits=threads, user_api="blas")
    except Exception as error:  # noqa: BLE001 - a library threadpoolctl cannot drive must not stop a service
        logger.warning("could not limit the BLAS threads to %d: %s", threads, error)
    return threads
