"""A parallel in-place scale of the O-EM statistics (their forgetting, ``acc *= f``).

NumPy's in-place multiply runs on one thread: 35 MB at box 48, K = 3, four times per N = 5 000
job, 0.11-0.12 s of it on the benchmark machine in a slow spell; this kernel took 0.05-0.06 s
there. The products are float32 times float32, as NumPy's, so the results are bit-identical.
(A parallel row gather for the particle chunks was measured too and dropped: 0.13-0.16 ->
0.12-0.14 s per job; in isolation one 1 000-row chunk takes 0.3 ms with NumPy, 0.2 ms with it.)
"""

from __future__ import annotations

import numba as nb


@nb.njit(parallel=True, cache=True, nogil=True)
def scale_inplace(a, f):  # pragma: no cover - jit
    """``a *= f`` for a 1-D float32 array (a flat view of the statistics)."""
    n = a.shape[0]
    nblk = 64
    step = (n + nblk - 1) // nblk
    for b in nb.prange(nblk):
        for j in range(b * step, min(n, (b + 1) * step)):
            a[j] *= f
