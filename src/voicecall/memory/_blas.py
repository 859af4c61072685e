"""Set numpy's OpenBLAS thread count at run time (best effort, Linux, no dependency).

OpenBLAS worker threads spin while they wait. On a gateway whose cores are busy
with calls, a small matmul split across them is slower, not faster: one question
took 80 ms with two BLAS threads and 8 ms with one on a loaded 2-core host.
The setting is process-wide; the gateway's other numpy work (audio frames) is
too small to be threaded anyway.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["set_blas_threads"]

log = logging.getLogger(__name__)

# numpy >= 2 wheels ship scipy-openblas (prefixed, 64-bit ints); older ones plain OpenBLAS.
_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def set_blas_threads(n: int) -> bool:
    """Tell every loaded OpenBLAS to use ``n`` threads; False when none was found."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh
                     if "openblas" in line.lower() and ".so" in line}
    except OSError:  # not Linux: leave the default
        return False
    done = False
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SYMBOLS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                fn(n)
                done = True
                break
    if not done:
        log.debug("memory.blas_threads_unchanged")
    return done
