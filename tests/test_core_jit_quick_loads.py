"""Cached kernels load without Numba's target-context refresh in the CLI's job processes
(:func:`cryoclass.core.jit.quick_cache_loads`): the same machine code, the same results, none
of the ~70 modules the refresh imports; anything Numba has to compile still compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cryoclass.core import jit

#: a cached parallel function that allocates (so its code calls Numba's runtime, NRT)
_MODULE = textwrap.dedent(
    """
    import numba as nb
    import numpy as np

    @nb.njit(cache=True, parallel=True)
    def row_sums(a):
        out = np.empty(a.shape[0])
        for i in nb.prange(a.shape[0]):
            tmp = np.empty(a.shape[1])
            tmp[:] = a[i] * 2.0
            out[i] = tmp.sum()
        return out
    """
)

_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    quick = None
    if sys.argv[1] == "quick":
        from cryoclass.core.jit import quick_cache_loads
        quick = quick_cache_loads()
    import cached_mod
    a = np.arange(12.0).reshape(3, 4)
    got = cached_mod.row_sums(a)
    print(json.dumps({
        "quick": quick,
        "sums": got.tolist(),
        "hits": sum(cached_mod.row_sums.stats.cache_hits.values()),
        "misses": sum(cached_mod.row_sums.stats.cache_misses.values()),
        "refreshed": "numba.np.arraymath" in sys.modules,
    }))
    """
)


def _probe(tmp_path, mode: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="needs Numba's JIT")
def test_cached_code_loads_without_the_refresh_and_computes_the_same(tmp_path):
    (tmp_path / "cached_mod.py").write_text(_MODULE)
    want = [2.0 * (16 * r + 6) for r in range(3)]  # 2 · (4r + 4r+1 + 4r+2 + 4r+3)
    # compiled with the quick path on: a cache miss compiles (with Numba's full refresh)
    first = _probe(tmp_path, "quick")
    assert first["quick"] is True and first["misses"] == 1 and first["hits"] == 0
    assert first["sums"] == want and first["refreshed"] is True
    # loaded from the cache: the same numbers, and the refresh's modules never imported
    quick = _probe(tmp_path, "quick")
    assert quick["hits"] == 1 and quick["misses"] == 0
    assert quick["sums"] == want and quick["refreshed"] is False
    # the usual load imports them (so the check above can tell the two apart)
    usual = _probe(tmp_path, "usual")
    assert usual["hits"] == 1 and usual["sums"] == want and usual["refreshed"] is True


def test_a_failed_quick_load_is_retried_the_usual_way(monkeypatch):
    from numba.core import caching

    calls = []

    def usual(self, sig, target_context):
        calls.append(sig)
        return "loaded the usual way"

    monkeypatch.setattr(caching.Cache, "load_overload", usual)
    assert jit.quick_cache_loads() is True
    assert jit.quick_cache_loads() is True  # idempotent: wrapped once

    class Broken:
        """A cache whose quick rebuild raises (say, code that needs a registry)."""

        _guard_against_spurious_io_errors = caching.Cache._guard_against_spurious_io_errors

        def _load_overload(self, sig, target_context):
            raise RuntimeError("needs the refresh")

    from numba.core.registry import cpu_target

    got = caching.Cache.load_overload(Broken(), "sig", cpu_target.target_context)
    assert got == "loaded the usual way" and calls == ["sig"]
    assert caching.Cache.load_overload.__wrapped_usual__ is usual


def test_no_op_without_the_internals(monkeypatch):
    """Another Numba layout: nothing replaced, no error."""
    from numba.core import caching

    monkeypatch.delattr(caching.Cache, "_load_overload")
    assert jit.quick_cache_loads() is False
