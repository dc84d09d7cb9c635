"""The job-running CLI commands let SciPy load without re-parsing docstrings
(:func:`cryoclass.cli.skip_scipy_doc_notes`): SciPy's functions still compute the same, only
the notes SciPy appends to docstrings at import time are missing; nothing changes where SciPy
lacks those internals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cryoclass import cli

_PROBE = r"""
import json, sys
import numpy as np
if sys.argv[1] == "skip":
    from cryoclass.cli import skip_scipy_doc_notes
    replaced = skip_scipy_doc_notes()
else:
    replaced = None
import scipy._lib._array_api as aa
import scipy.cluster.vq, scipy.fft, scipy.ndimage, scipy.special
x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
mask = np.zeros((9, 9)); mask[2:7, 3:6] = 1
_, lab = scipy.cluster.vq.kmeans2(np.r_[x[:3, :2], x[:3, :2] + 50], 2, seed=1, minit="++")
print(json.dumps({
    "replaced": replaced,
    "doc": scipy.ndimage.gaussian_filter.__doc__,
    "fft_err": float(np.abs(scipy.fft.rfft(x) - np.fft.rfft(x.astype(np.float64))).max()),
    "edt": scipy.ndimage.distance_transform_edt(mask).tolist(),
    "erf": float(scipy.special.erf(0.5)),
    "groups": sorted(np.bincount(lab).tolist()),
    "table": len(aa.xp_capabilities_table),
}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_scipy_loads_without_doc_parsing_and_computes_the_same():
    plain, skipped = _probe("plain"), _probe("skip")
    if "**Array API Standard Support**" not in plain["doc"]:
        pytest.skip("this SciPy adds no array-API notes at import time (older than 1.16)")
    assert skipped["replaced"] is True
    # the docstring is SciPy's own text, without the note appended at import time
    assert "**Array API Standard Support**" not in skipped["doc"]
    assert "Multidimensional Gaussian filter" in skipped["doc"]
    # SciPy's capability bookkeeping is still filled, and the functions compute the same
    assert skipped["table"] == plain["table"] > 100
    assert skipped["fft_err"] < 1e-5 and plain["fft_err"] < 1e-5
    assert skipped["edt"] == plain["edt"]
    assert skipped["erf"] == plain["erf"] == pytest.approx(0.5204998778130465, rel=1e-12)
    assert skipped["groups"] == plain["groups"] == [3, 3]


def test_no_op_without_the_internals(monkeypatch):
    """Another SciPy layout (modules or names missing): nothing replaced, no error."""
    import scipy._lib._array_api as aa
    import scipy._lib._util as ut

    monkeypatch.setattr(cli, "_SCIPY_DOC_PARSERS", ("scipy._lib._no_such_module",))
    assert cli.skip_scipy_doc_notes() is False
    monkeypatch.setattr(cli, "_SCIPY_DOC_PARSERS", ("scipy._lib._array_api", "scipy._lib._util"))
    monkeypatch.delattr(aa, "FunctionDoc", raising=False)
    monkeypatch.delattr(ut, "FunctionDoc", raising=False)
    assert cli.skip_scipy_doc_notes() is False


def test_doc_stand_in_returns_the_docstring():
    def f():
        """Summary line.

        More text."""

    d = cli._DocAsIs(f)
    d["Notes"].append("a note")  # what SciPy's decorators do: swallowed
    d["Parameters"] = []
    assert [p for p in d["Parameters"]] == []
    assert str(d).split("\n", 1)[1] == f.__doc__  # the callers drop the first line

    def g():
        pass

    assert str(cli._DocAsIs(g)) == "\n"  # no docstring: nothing after the signature line


@pytest.mark.parametrize(("argv", "called"), [
    (["classify", "--help"], True),
    (["demo", "--help"], True),
    (["simulate", "--help"], True),
    (["reconstruct", "--help"], True),
    (["select", "--help"], True),
    (["info", "--help"], False),
    (["report", "--help"], False),
    (["compile", "--help"], False),
])  # fmt: skip
def test_start_up_steps_for_job_commands_only(monkeypatch, capsys, argv, called):
    """The job commands, and only they, skip SciPy's doc parsing, defer NumPy's unused modules
    and load cached kernels without Numba's refresh (``core.jit.quick_cache_loads``)."""
    from cryoclass.core import jit

    seen = set()
    monkeypatch.setattr(cli, "skip_scipy_doc_notes", lambda: seen.add("scipy") or True)
    monkeypatch.setattr(cli, "defer_unused_numpy_modules", lambda: seen.add("numpy") or [])
    monkeypatch.setattr(jit, "quick_cache_loads", lambda: seen.add("numba") or True)
    with pytest.raises(SystemExit):
        cli.main(argv)
    capsys.readouterr()
    assert seen == ({"scipy", "numpy", "numba"} if called else set())


_DEFER_PROBE = r"""
import json, sys
from cryoclass.cli import defer_unused_numpy_modules
deferred = defer_unused_numpy_modules()
import scipy._lib._array_api  # clones NumPy's namespace
import numpy as np
lazy = {m: type(sys.modules[m]).__name__ for m in deferred}
executed_before_use = "unittest" in sys.modules
np.testing.assert_allclose(np.float32(1.0), 1.0)  # first use: numpy.testing loads
from numpy.testing import assert_array_equal
assert_array_equal([1, 2], [1, 2])
print(json.dumps({
    "deferred": deferred, "lazy": lazy, "executed_before_use": executed_before_use,
    "unittest_after_use": "unittest" in sys.modules,
    "f2py_works": callable(np.f2py.run_main),
    "again": defer_unused_numpy_modules(),
}))
"""


def test_unused_numpy_modules_load_only_when_used():
    out = subprocess.run([sys.executable, "-c", _DEFER_PROBE], capture_output=True, text=True,
                         check=True)  # fmt: skip
    got = json.loads(out.stdout)
    assert got["deferred"] == ["numpy.f2py", "numpy.testing"]
    # SciPy's clone of NumPy's namespace did not run them (unittest comes with numpy.testing)
    assert got["lazy"] == {"numpy.f2py": "_LazyModule", "numpy.testing": "_LazyModule"}
    assert got["executed_before_use"] is False
    # used, they load and work as usual; a second call defers nothing (already imported)
    assert got["unittest_after_use"] is True and got["f2py_works"] is True
    assert got["again"] == []
