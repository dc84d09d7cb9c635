"""Command line: ``cryoclass classify | simulate | demo | reconstruct | regroup | reclassify |
report``.

Every bad input or parameter ends in one clear line on stderr and a non-zero exit (no traceback):
exit code 2 for bad input/parameters, 130 when interrupted (the output directory stays
consistent; ``--resume`` continues).

Example
-------
>>> from cryoclass.cli import build_parser
>>> args = build_parser().parse_args(["classify", "p.star", "-K", "3", "--filter-res", "8",
...                                   "-o", "out"])
>>> args.n_classes, args.filter_res
(3, 8.0)
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import os
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import CryoclassError

__all__ = [
    "main",
    "build_parser",
    "params_from_args",
    "parse_setting",
    "ProgressPrinter",
]


def _d(name: str) -> Any:
    """The API default of a parameter (one source of truth for the CLI and the widgets)."""
    from .params import ClassificationParams

    return ClassificationParams.__dataclass_fields__[name].default


def _params_epilog() -> str:
    """Every parameter's API name and default, by group (for ``--set``)."""
    from .params import PARAM_GROUPS

    lines = ["parameters for --set NAME=VALUE (API names, defaults), by group:"]
    for group, members in PARAM_GROUPS.items():
        items = ", ".join(f"{n}={_d(n)!r}" for n in members)
        lines.append(f"  {group}: {items}")
    return "\n".join(lines)


#: ``classify`` options that set a parameter: argparse dest → API name (a ``no_…`` flag turns its
#: parameter off). Options without a help text of their own take the parameter's (one source of
#: truth with the API docs and the widgets' form).
_FLAG_PARAMS: dict[str, str] = {
    "n_classes": "n_classes",
    "filter_res": "filter_res_A",
    "init_mode": "init_mode",
    "symmetry": "symmetry",
    "hard": "force_hard",
    "scale": "per_particle_scale",
    "no_scale_shrinkage": "scale_shrinkage",
    "no_fsc_filter": "use_fsc_filter",
    "tau2_fudge": "tau2_fudge",
    "convergence_pct": "convergence_pct",
    "no_rms_check": "rms_change_check",
    "no_shrink_to_consensus": "shrink_to_consensus",
    "local_shrink": "local_shrink_A",
    "rms_threshold": "rms_change_threshold",
    "max_fem_iters": "max_fem_iters",
    "oem_epochs": "oem_epochs",
    "batch_per_class": "oem_batch_size_per_class",
    "lr_init": "oem_learning_rate_init",
    "lr_halflife": "oem_learning_rate_halflife_pct",
    "class_similarity": "class_similarity",
    "auto_class_similarity": "auto_tune_class_similarity",
    "init_res": "init_res_A",
    "init_restarts": "init_restarts",
    "init_lowres_iters": "init_lowres_iters",
    "init_refine_iters": "init_refine_iters",
    "highpass_res": "highpass_res_A",
    "reorder_by_size": "reorder_by_size",
    "output_every_fem": "output_every_fem",
    "seed": "seed",
    "device": "device",
    "chunk_size": "chunk_size",
    "cache_dir": "cache_dir",
    "memory_limit": "memory_limit_GB",
}


def _describe_parameter_options(parser: argparse.ArgumentParser) -> None:
    """Give every option of :data:`_FLAG_PARAMS` without a help text its parameter's, and every
    option taking a value its default (unless its help says it)."""
    from .params import ClassificationParams

    fields = ClassificationParams.__dataclass_fields__
    for action in parser._actions:
        if action.dest not in _FLAG_PARAMS:
            continue
        if action.help is None:
            action.help = fields[_FLAG_PARAMS[action.dest]].metadata["help"].replace("%", "%%")
        takes_value = action.nargs != 0
        if takes_value and action.default not in (None, "") and "default" not in action.help:
            action.help += " (default: %(default)s)"


def _add_classify(sub: Any) -> None:
    c = sub.add_parser(
        "classify",
        help="3D classification without alignment",
        description="Sort particles with known poses and CTF into K 3D classes (O-EM + F-EM).",
        epilog=_params_epilog(),
        formatter_class=_WrappedEpilog,
    )
    c.add_argument("particles", help="RELION .star or CryoSPARC .cs")
    # required unless --params gives them (checked in params_from_args)
    c.add_argument("-K", "--n-classes", dest="n_classes", type=int, help="number of classes")
    c.add_argument("--filter-res", type=float, help="filter resolution (Å)")
    c.add_argument("-o", "--outdir", required=True, help="output directory")
    c.add_argument("--passthrough", help="CryoSPARC passthrough .cs (merged by uid)")
    c.add_argument(
        "--project-dir",
        help="CryoSPARC/RELION project directory: image paths resolve from it (and, for a RELION "
        "star file, run_model.star gives the class maps relative to it)",
    )
    c.add_argument("--solvent-mask", help="solvent mask .mrc (default: auto from the consensus)")
    c.add_argument("--focus-mask", help="focus mask .mrc (default: all ones)")
    c.add_argument("--init-mode", choices=("simple", "pca", "input"), default=_d("init_mode"))
    c.add_argument("--init-volumes", nargs="+", help="initial volumes (count = K)")
    c.add_argument("--symmetry", default=_d("symmetry"))
    c.add_argument("--hard", action="store_true", help="force hard classification")
    c.add_argument(
        "--scale", choices=("optimal", "input", "none"), default=_d("per_particle_scale")
    )
    c.add_argument(
        "--no-scale-shrinkage",
        action="store_true",
        help="optimal scale: the raw per-image fit (no empirical-Bayes shrinkage)",
    )
    c.add_argument(
        "--no-fsc-filter",
        action="store_true",
        help="no FSC filtering of the classes: RELION's regulariser T (--tau2-fudge) instead",
    )
    c.add_argument("--tau2-fudge", type=float, default=_d("tau2_fudge"))
    c.add_argument("--convergence-pct", type=float, default=_d("convergence_pct"))
    c.add_argument("--no-rms-check", action="store_true", help="no RMS density change check")
    c.add_argument(
        "--no-shrink-to-consensus",
        action="store_true",
        help="regularise classes towards zero (CryoSPARC/RELION) instead of the consensus",
    )
    c.add_argument(
        "--local-shrink",
        type=float,
        default=_d("local_shrink_A"),
        metavar="SIGMA_A",
        help="σ (Å) of the local shrinkage of class differences (0 = off)",
    )
    c.add_argument("--rms-threshold", type=float, default=_d("rms_change_threshold"))
    c.add_argument("--max-fem-iters", type=int, default=_d("max_fem_iters"))
    c.add_argument("--oem-epochs", type=int, default=_d("oem_epochs"))
    c.add_argument("--batch-per-class", type=int, default=_d("oem_batch_size_per_class"))
    c.add_argument("--lr-init", type=float, default=_d("oem_learning_rate_init"))
    c.add_argument("--lr-halflife", type=float, default=_d("oem_learning_rate_halflife_pct"))
    c.add_argument("--class-similarity", type=float, default=_d("class_similarity"))
    c.add_argument("--auto-class-similarity", action="store_true")
    c.add_argument("--init-res", type=float, default=_d("init_res_A"))
    c.add_argument(
        "--init-restarts",
        type=int,
        default=_d("init_restarts"),
        help="candidate initialisations scored by a short low-res EM",
    )
    c.add_argument(
        "--init-lowres-iters",
        type=int,
        default=_d("init_lowres_iters"),
        help="low-res EM iterations per candidate (0 = no scoring)",
    )
    c.add_argument(
        "--init-refine-iters",
        type=int,
        default=_d("init_refine_iters"),
        help="further low-res EM iterations for the kept candidate",
    )
    c.add_argument("--highpass-res", type=float, default=_d("highpass_res_A"))
    c.add_argument("--reorder-by-size", action="store_true")
    c.add_argument("--output-every-fem", action="store_true")
    c.add_argument("--seed", type=int, default=_d("seed"))
    c.add_argument("--device", choices=("cpu", "gpu"), default=_d("device"))
    c.add_argument("--chunk-size", type=int, default=_d("chunk_size"))
    c.add_argument(
        "--cache-dir",
        default=_d("cache_dir"),
        help="on-disk cache of preprocessed particles, streamed in chunks and reused by later "
        "runs (default: in memory)",
    )
    c.add_argument(
        "--memory-limit",
        type=float,
        default=_d("memory_limit_GB"),
        help="GB the preprocessed particles may take in RAM; larger → OUTDIR/particle_cache "
        "(default: 0 = no limit)",
    )
    c.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786): shard particles over its workers",
    )
    c.add_argument(
        "--params",
        dest="params_file",
        metavar="PARAMS.yaml",
        help="start from the parameters in this file (a classification's params.yaml, or a "
        "mapping of parameter names): options that keep their defaults take the file's "
        "values, options given with other values and --set win",
    )
    c.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any parameter by its API name (listed below), e.g. --set "
        "pca_n_components=3 --set scale_max=3; repeatable, applied after the other options",
    )
    c.add_argument("--resume", action="store_true", help="continue from OUTDIR's checkpoint")
    c.add_argument("--overwrite", action="store_true", help="replace a finished OUTDIR")
    c.add_argument(
        "--quiet", action="store_true", help="no progress bar (bars are drawn on a terminal only)"
    )
    _describe_parameter_options(c)


def _add_followup(sub: Any) -> None:
    """``reconstruct``, ``regroup``, ``reclassify``, ``select`` (:mod:`cryoclass.followup.cli`)."""
    from .followup import cli as followup_cli

    followup_cli.add_parsers(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cryoclass`` parser. With ``command`` (the subcommand about to run) the other
    subcommands are registered by name only where that saves importing their modules (the
    simulator's costs ~0.3 s of start-up that ``classify`` does not need)."""
    parser = argparse.ArgumentParser(
        prog="cryoclass",
        description="cryoclass: cryo-EM 3D classification without alignment",
    )
    parser.add_argument("--version", action="version", version=f"cryoclass {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_classify(sub)
    s = sub.add_parser("simulate", help="simulate a dataset with ground truth")
    if command in (None, "simulate"):
        from .sim import cli as sim_cli

        sim_cli.add_arguments(s)
    from . import demo

    d = sub.add_parser("demo", help="simulate, classify, report accuracy (the quick start)")
    demo.add_arguments(d)
    _add_followup(sub)
    r = sub.add_parser(
        "report",
        help="one HTML page of a classification's diagnostic plots and class table",
        description="Rebuild the dashboard's diagnostic plots and class table of a "
        "classification OUTDIR as one self-contained HTML page (opens offline). Needs the "
        "widgets extra (plotly).",
    )
    r.add_argument("outdir", help="classification OUTDIR")
    r.add_argument("-o", "--output", help="HTML file (default OUTDIR/report.html)")
    i = sub.add_parser(
        "info",
        help="a particle set at a glance: size, optics, defocus, views, classification boxes",
        description="Summarise a particle file before classifying it: particle count, box, "
        "pixel size and Nyquist, optics groups, defocus range, half-sets, per-particle scales, "
        "how evenly the viewing directions cover the sphere, and the classification box and "
        "memory each filter resolution gives. Reads the metadata and image headers only.",
    )
    i.add_argument("particles", help=".star or .cs particle file")
    i.add_argument("--passthrough", help="CryoSPARC passthrough .cs (merged by uid)")
    i.add_argument("--project-dir", help="CryoSPARC/RELION project directory for image paths")
    i.add_argument(
        "--filter-res",
        type=float,
        nargs="+",
        metavar="A",
        help="filter resolutions (Å) to tabulate (default: 4-20 Å, those this box allows)",
    )
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    sub.add_parser(
        "compile",
        help="compile the CPU kernels now (once per machine: before a workshop, in an image)",
        description="Compile the Numba CPU kernels into Numba's on-disk cache by classifying "
        "a tiny simulated dataset, so that the first real job (and every tutorial) starts at "
        "once instead of compiling for up to 2 minutes. Needed once per machine (per CPU kind) "
        "and installation.",
    )
    return parser


class _WrappedEpilog(argparse.HelpFormatter):
    """Help with the epilog's lines kept (each group on its own line, wrapped and indented)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return "\n".join(
            textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent + "    ")
            for line in text.splitlines()
        )


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (``--set``) → ``(name, value)`` typed as the parameter's field.

    Raises :class:`~cryoclass.errors.ParameterError` naming the parameter: an unknown name, a
    missing ``=``, or a value that is not of the parameter's type (limits are checked by
    :class:`~cryoclass.params.ClassificationParams` itself)."""
    from .errors import ParameterError
    from .params import param_info

    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise ParameterError(text, "--set takes NAME=VALUE, e.g. --set pca_n_components=3")
    types = {i["name"]: i["type"] for i in param_info()}
    if name not in types:
        raise ParameterError(name, "unknown parameter (cryoclass classify --help lists them)")
    t = types[name]
    try:
        if t == "bool":
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError
            return name, raw.lower() in _TRUE
        if t == "int":
            v = float(raw)
            if not v.is_integer():
                raise ValueError
            return name, int(v)
        if t == "float":
            return name, float(raw)
    except ValueError:
        kind = {"bool": "true or false", "int": "a whole number", "float": "a number"}[t]
        raise ParameterError(name, f"must be {kind}, got {raw!r}") from None
    return name, raw


def params_from_args(a: argparse.Namespace) -> Any:
    """The job's parameters from the parsed ``classify`` options: the API defaults, replaced by
    ``--params FILE`` (if given), replaced by every option given with a non-default value,
    replaced by ``--set NAME=VALUE``."""
    from .errors import ParameterError
    from .params import ClassificationParams

    flags = _params_from_flags(a)
    # -K and --filter-res have no command-line default: given or not is known
    required = {"n_classes": ("-K", a.n_classes), "filter_res_A": ("--filter-res", a.filter_res)}
    given = {k: v for k, (_flag, v) in required.items() if v is not None}
    params_file = getattr(a, "params_file", None)
    if not params_file:
        for name, (flag, v) in required.items():
            if v is None:
                raise ParameterError(name, f"{flag} is required (or --params FILE that sets it)")
    else:
        from .params import read_params_file

        changed = {k: v for k, v in flags.items() if v != _d(k)}
        flags = {**flags, **read_params_file(params_file), **changed, **given}
    settings = dict(parse_setting(s) for s in getattr(a, "settings", None) or [])
    return ClassificationParams(**{**flags, **settings})


def _params_from_flags(a: argparse.Namespace) -> dict[str, Any]:
    """The parameters the flags set (:data:`_FLAG_PARAMS`); ``--no-…`` flags turn theirs off,
    and -K / --filter-res, which have no command-line default, fall back to the API's."""
    out: dict[str, Any] = {}
    for dest, name in _FLAG_PARAMS.items():
        value = getattr(a, dest)
        if dest.startswith("no_"):
            value = not value
        elif value is None:
            value = _d(name)
        out[name] = value
    return out


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (not a file, pipe or notebook capture)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressPrinter:
    """A CLI subscriber: a tqdm bar per phase, one line per iteration, a summary at the end.

    ``bar``: True draws the bars, False (``--quiet``) never; None (the CLI's default) draws them
    only where ``stream`` is a terminal, and elsewhere — a log redirected to a file (a cluster
    job's, ``nohup``, ``| tee``) — prints a line as each phase starts instead, without a bar's
    carriage-return redraws. The iteration lines and the summary are printed in every case."""

    def __init__(self, stream: Any = None, bar: bool | None = None):
        self.stream = stream or sys.stderr
        self.bar_enabled = _is_terminal(self.stream) if bar is None else bar
        self.phase_lines = bar is None and not self.bar_enabled
        self._bar: Any = None
        self._phase = ""

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __call__(self, e: Any) -> None:
        name = type(e).__name__
        if name == "JobStarted":
            print(
                f"cryoclass {__version__}: {e.n_particles} particles, K = {e.n_classes}; "
                f"box {e.box} px at {e.pixel_size_A:.3g} Å → classification box {e.box_c} px "
                f"at {e.pixel_size_c_A:.3g} Å (filter {e.params.filter_res_A:g} Å)",
                file=self.stream,
            )
            if e.compiling_kernels:
                from .core.jit import COMPILE_NOTE

                print(COMPILE_NOTE, file=self.stream)
        elif name == "PhaseStarted":
            self._close()
            self._phase = e.phase
            if self.phase_lines:  # a log without bars still says where the job is
                print(f"{e.phase:>10} …", file=self.stream, flush=True)
        elif name == "Progress" and self.bar_enabled:
            if self._bar is None or self._bar.total != e.total or e.done <= self._bar.n:
                from tqdm.auto import tqdm  # only where bars are drawn (not with --quiet)

                self._close()
                self._bar = tqdm(
                    total=e.total,
                    desc=f"{e.phase:>10}",
                    unit="ptcl",
                    file=self.stream,
                    leave=False,
                    dynamic_ncols=True,
                )
            self._bar.update(e.done - self._bar.n)
        elif name == "IterationFinished":
            self._close()
            sizes = "/".join(str(int(round(m))) for m in e.class_mass)
            sw = "" if e.pct_switched != e.pct_switched else f" switched {e.pct_switched:.2f}%"
            eta = e.eta_remaining_s
            print(
                f"{e.phase.upper():>4} {e.iteration + 1:3d}  η={e.eta:.3f} β={e.beta:.2f} "
                f"sizes {sizes}{sw} RMS Δ {e.rms_change:.4f} ESS {e.mean_ess:.2f} "
                f"({e.elapsed_s:.1f} s, ≤{eta:.0f} s left)",
                file=self.stream,
            )
        elif name == "ClassesReseeded":
            print(f"NOTE {e.message}", file=self.stream)
        elif name == "JobFinished":
            self._close()
            print(f"finished in {e.time_s:.1f} s: {e.reason}", file=self.stream)
        elif name == "JobCancelledEvent":
            self._close()
            print(
                f"cancelled during {e.phase}; the output directory can be resumed", file=self.stream
            )


def _client(address: str | None) -> Any:
    if not address:
        return None
    from .distributed import connect

    return connect(address)


class _StartupGC:
    """Cyclic garbage collection paused while the process loads its libraries, reads the
    particles and (at the first kernel call) starts Numba; resumed, with everything loaded so
    far frozen (:func:`gc.freeze`: never traversed again), when the first phase after the
    preprocessing starts. Loading creates ~10⁵ long-lived objects and almost no garbage, so the
    collector only re-walked them: three full collections and ~370 young ones, 0.14 s of an
    N = 5 000 run (``benchmarks/RESULTS.md``). :func:`main` starts it for ``classify`` before
    building the parser (whose imports alone took 0.06-0.08 s of collections). A job
    subscriber; :meth:`release` is idempotent."""

    def __init__(self) -> None:
        self._was_enabled = gc.isenabled()
        self._held = True
        gc.disable()

    def __call__(self, event: Any) -> None:
        if getattr(event, "phase", "preprocess") != "preprocess":
            self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            gc.freeze()
            if self._was_enabled:
                gc.enable()


#: glibc ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let glibc's ``malloc`` keep and reuse freed memory in this process: blocks up to
    ``mmap_threshold`` bytes (32 MiB, glibc's largest) come from the heap rather than from fresh
    ``mmap``s, and up to ``trim_threshold`` bytes of free heap are kept rather than given back.
    The job allocates and frees arrays of a few MB every iteration (N = 5 000: the padded
    solves' 10.8 MB transforms, 143 of them); by default each was fresh memory from the kernel,
    zeroed page by page at first touch: 80 000 minor page faults per 4 s run, 42 000 with
    this (``benchmarks/RESULTS.md``). The peak RSS grows by
    2-5 % (N = 5 000 / 20 000). Only the CLI calls this (a notebook's kernel outlives the job,
    and should give the memory back). Skipped where the user set glibc's malloc tunables; a
    no-op (False) off glibc. Returns whether both settings were taken."""
    if not sys.platform.startswith("linux"):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        k.startswith("MALLOC_") for k in os.environ
    ):
        return False  # the user's choice
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols, or not glibc's malloc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok


class _DocAsIs:
    """Stands in for SciPy's numpydoc parser (``scipy._lib._docscrape.FunctionDoc``) where SciPy
    calls it while its modules load: every section is an empty list that takes appends, and
    ``str()`` is the function's docstring as it was, after the signature line the callers
    strip. Only docstrings change (they lose SciPy's added notes); see
    :func:`skip_scipy_doc_notes`."""

    def __init__(self, func: Any, *args: Any, **kwargs: Any) -> None:
        self._doc = getattr(func, "__doc__", None) or ""

    def __getitem__(self, section: str) -> list:
        return []

    def __setitem__(self, section: str, value: Any) -> None:
        pass

    def __str__(self) -> str:
        return "\n" + self._doc


#: the commands that run the engine (and so import SciPy): :func:`skip_scipy_doc_notes` first
_JOB_COMMANDS = ("classify", "demo", "simulate", "reconstruct", "regroup", "reclassify", "select")

#: SciPy modules that parse docstrings with ``FunctionDoc`` as their functions are defined
_SCIPY_DOC_PARSERS = ("scipy._lib._array_api", "scipy._lib._util")


#: NumPy submodules a job never uses that SciPy's array-API layer imports all the same
_UNUSED_NUMPY_MODULES = ("numpy.f2py", "numpy.testing")


def defer_unused_numpy_modules() -> list[str]:
    """Register NumPy's ``f2py`` and ``testing`` as lazily loaded modules (``importlib.util.
    LazyLoader``): each runs its code only when one of its attributes is first used. SciPy's
    array-API layer clones NumPy's namespace when the job's SciPy modules load, and NumPy
    imports a submodule the first time anything asks for it, so the clone alone imported both
    (f2py's Fortran parser, and ``unittest`` through ``numpy.testing``: 0.04 s of each fresh
    CLI process, ``benchmarks/RESULTS.md``). Nothing changes for code that uses them: the
    first attribute access loads them as usual. Only the CLI's job commands call this. Returns
    the modules deferred (none that are already imported or cannot be found)."""
    import importlib.util

    numpy = sys.modules.get("numpy") or importlib.import_module("numpy")
    deferred = []
    for name in _UNUSED_NUMPY_MODULES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(numpy, name.rpartition(".")[2], module)  # what an import does for a submodule
        deferred.append(name)
    return deferred


def skip_scipy_doc_notes() -> bool:
    """Let SciPy's modules load without re-parsing docstrings in this process. SciPy ≥ 1.16
    decorates its functions at import time (``xp_capabilities``, ``_apply_over_batch``, the
    ``rng`` transition): each call parses the function's docstring with numpydoc, appends a note
    on array-API support and writes the docstring back. A job imports ``scipy.fft`` (which
    pulls in ``scipy.special``'s 87 ufuncs), ``scipy.ndimage``, ``scipy.cluster.vq`` and, through
    Numba, ``scipy.linalg``: 382 parses, 0.20 s of the 0.33 s those imports took on the 2-core
    AMD host (0.13 s with this; ``benchmarks/RESULTS.md``). The parses change only ``__doc__``,
    which a CLI process never reads; SciPy's capability tables are still filled. Only the CLI
    calls this (a notebook user may read SciPy's docstrings). A no-op (False) where SciPy or
    these internals are missing (another SciPy version): everything then loads as usual.
    Returns whether the parser was replaced."""
    import importlib

    done = False
    for name in _SCIPY_DOC_PARSERS:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(getattr(mod, "FunctionDoc", None), type):
            mod.FunctionDoc = _DocAsIs  # type: ignore[attr-defined]
            done = True
    return done


def cmd_classify(
    a: argparse.Namespace, argv: Sequence[str], startup_gc: _StartupGC | None = None
) -> int:
    """``cryoclass classify``; ``startup_gc``: the collector pause :func:`main` began before
    it built the parser (which imports the engine: 0.06-0.08 s of collections), else one of
    its own."""
    keep_freed_memory()
    if startup_gc is None:
        startup_gc = _StartupGC()
    try:
        return _classify(a, argv, startup_gc)
    finally:
        startup_gc.release()


def _classify(a: argparse.Namespace, argv: Sequence[str], startup_gc: _StartupGC) -> int:
    from .engine.job import Classification
    from .io.particles import read_particles

    params = params_from_args(a)
    particles = read_particles(a.particles, passthrough=a.passthrough, project_dir=a.project_dir)
    job = Classification(
        particles,
        params,
        solvent_mask=a.solvent_mask,
        focus_mask=a.focus_mask,
        init_volumes=a.init_volumes,
        outdir=a.outdir,
        resume=a.resume,
        overwrite=a.overwrite,
        command="cryoclass " + shlex.join(argv),
        # a RELION project directory: run_model.star's map paths are relative to it
        project_dir=a.project_dir if particles.source_format == "star" else None,
        client=_client(a.scheduler),
    )
    job.subscribe(startup_gc)
    job.subscribe(ProgressPrinter(bar=False if a.quiet else None))
    try:
        result = job.run()
    except KeyboardInterrupt:
        print("interrupted; OUTDIR holds the last checkpoint (use --resume)", file=sys.stderr)
        return 130
    if result is None:
        return 130
    print(result.class_table().to_string(index=False), file=sys.stdout)
    print(f"outputs in {a.outdir}", file=sys.stdout)
    print(f"plots: cryoclass report {shlex.quote(str(a.outdir))}", file=sys.stdout)
    from .io.relion_model import MODEL_NAME, display_command

    model = os.path.join(a.outdir, MODEL_NAME)
    if os.path.isfile(model):
        print(f"RELION class selection: {display_command(model)}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import json

    from .io.particles import read_particles
    from .io.summary import format_summary, particle_summary

    particles = read_particles(a.particles, passthrough=a.passthrough, project_dir=a.project_dir)
    res = tuple(a.filter_res) if a.filter_res else None
    summary = particle_summary(particles, filter_res_A=res)
    summary["class_sizes"] = _class_sizes(particles)
    print(json.dumps(summary, indent=1) if a.json else format_summary(summary))
    return 0


def _class_sizes(particles: Any) -> list[int] | None:
    """Particles per class (0-based) when the file carries classes (``rlnClassNumber``,
    ``alignments3D/class``: a classification's output), else None."""
    import numpy as np

    from .errors import InputFileError
    from .followup.sources import class_labels

    try:
        labels = class_labels(particles)
    except InputFileError:
        return None
    labels = labels[labels >= 0]
    return [int(c) for c in np.bincount(labels)] if labels.size else None


def cmd_report(a: argparse.Namespace) -> int:
    try:
        from cryoclass_widgets.report import write_report
    except ImportError as e:
        raise CryoclassError(
            f"report needs the widgets extra ({e.name or e}): pip install 'cryoclass[widgets]'"
        ) from None
    out = write_report(a.outdir, a.output)
    print(f"report in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    # classify: collections paused from here (building the parser imports the engine; see
    # _StartupGC) until the job's first phase after preprocessing
    startup_gc = _StartupGC() if command == "classify" else None
    if command in _JOB_COMMANDS:
        defer_unused_numpy_modules()
        skip_scipy_doc_notes()
        from .core.jit import quick_cache_loads

        quick_cache_loads()
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
    except BaseException:  # a usage error or --help (SystemExit): the collector back on
        if startup_gc is not None:
            startup_gc.release()
        raise
    t0 = time.perf_counter()
    try:
        if args.command == "classify":
            return cmd_classify(args, argv, startup_gc)
        if args.command == "simulate":
            from .sim import cli as sim_cli

            return int(sim_cli.run(args))
        if args.command == "demo":
            from . import demo

            return int(demo.run(args))
        if args.command == "report":
            return cmd_report(args)
        if args.command == "info":
            return cmd_info(args)
        if args.command == "compile":
            from .warmup import compile_kernels

            return 1 if compile_kernels()["remaining"] else 0
        if args.command in ("reconstruct", "regroup", "reclassify", "select"):
            from .followup import cli as followup_cli

            return followup_cli.run(args, argv)
    except CryoclassError as e:
        print(f"cryoclass {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def entry() -> None:
    """The ``cryoclass`` console script: :func:`main`, then :func:`quick_exit` with its code.
    An exception that escapes ``main`` (a bug: bad inputs end in one line and code 2) takes the
    normal exit, traceback included."""
    quick_exit(main())


def quick_exit(code: int) -> None:
    """End the process once everything is written, without the interpreter's teardown of its
    modules: with Numba/LLVM, SciPy and pandas loaded that teardown took 0.3-0.4 s of every run
    (N = 5 000: 5 % of the wall time). Before ``os._exit``: other non-daemon threads are joined,
    the ``atexit`` handlers run (logging, weakref finalisers such as temporary directories,
    multiprocessing), and stdout/stderr are flushed — what a normal exit does that matters."""
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
