"""Command-line follow-up jobs: ``cryoclass reconstruct | regroup | reclassify | select``.

::

    cryoclass reconstruct PARTICLES -o OUTDIR [--classes-from DIR_OR_FIELD] [--mask M.mrc]
                                              [--symmetry C1]
    cryoclass regroup RESULT_DIR -n 3 -o OUTDIR [--min-class-size N] [--exclude 4 7]
                                                [--method hierarchical|spectral]
    cryoclass reclassify RESULT_DIR --classes 0 2 -K 2 [--filter-res 8] -o OUTDIR
    cryoclass select RESULT_DIR --classes 0 2 [--min-probability 0.9] -o OUTDIR

``PARTICLES`` is a ``.star``/``.cs`` file with class assignments (``rlnClassNumber``,
``alignments3D/class``) or a classification OUTDIR. ``reclassify`` inherits every parameter of
the parent classification (its ``params.yaml``) except those given on the command line.

Example
-------
>>> import argparse
>>> from cryoclass.followup.cli import COMMANDS, add_parsers
>>> sub = argparse.ArgumentParser().add_subparsers(dest="command")
>>> add_parsers(sub)
>>> sorted(COMMANDS)
['reclassify', 'reconstruct', 'regroup', 'select']
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "run", "COMMANDS"]

COMMANDS = ("reconstruct", "regroup", "reclassify", "select")


def _add_reconstruct(sub: Any) -> None:
    c = sub.add_parser(
        "reconstruct",
        help="heterogeneous reconstruction only: per-class maps at the full box",
        description="Reconstruct each class from its hard-assigned particles at the extracted "
        "box and pixel size, with half-maps, masked/unmasked FSC and resolution.",
    )
    c.add_argument("particles", help=".star/.cs with class assignments, or a classification OUTDIR")
    c.add_argument("-o", "--outdir", required=True)
    c.add_argument(
        "--classes-from",
        help="classification OUTDIR (matched by uid) or column/field name "
        "(default: rlnClassNumber / alignments3D/class of PARTICLES)",
    )
    c.add_argument("--mask", help="solvent mask .mrc at the particles' box (default: auto)")
    c.add_argument("--symmetry", default="C1")
    c.add_argument("--n-classes", type=int, help="K (default: largest class + 1)")
    c.add_argument("--scale", choices=("optimal", "input", "none"), default="optimal")
    c.add_argument("--filter-res", type=float, help="Å (default: Nyquist, the full box)")
    c.add_argument("--passthrough", help="CryoSPARC passthrough .cs (merged by uid)")
    c.add_argument("--project-dir", help="project directory for image paths")
    c.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    c.add_argument("--quiet", action="store_true")


def _add_project_dir(c: Any) -> None:
    c.add_argument(
        "--project-dir",
        help="RELION/CryoSPARC project directory the image paths of RESULT_DIR's particles are "
        "relative to (default: the current directory)",
    )


def _add_class_choice(c: Any) -> None:
    """``--project-dir`` and the options choosing particles by class (``reclassify``,
    ``select``; :func:`cryoclass.followup.select.selection_rows`)."""
    _add_project_dir(c)
    c.add_argument("--classes", type=int, nargs="+", help="0-based classes (class_NN numbering)")
    c.add_argument("--min-size", type=int, help="only classes with at least this many particles")
    c.add_argument(
        "--min-probability",
        type=float,
        default=0.0,
        metavar="P",
        help="keep a particle only if its posterior summed over the chosen classes is ≥ P "
        "(0-1; default 0: every particle whose most likely class is chosen)",
    )


def _result(path: str, project_dir: str | None) -> Any:
    """The classification OUTDIR ``path``, read with image paths resolved from ``project_dir``."""
    from .sources import load_result

    return load_result(path, project_dir=project_dir)


def _add_regroup(sub: Any) -> None:
    c = sub.add_parser(
        "regroup",
        help="group many classes into superclasses by voxel correlation",
        description="Cluster the class maps of a classification OUTDIR into superclasses "
        "(real-space correlation inside the solvent mask).",
    )
    c.add_argument("result_dir", help="classification OUTDIR")
    _add_project_dir(c)
    c.add_argument("-n", "--n-superclasses", type=int, required=True)
    c.add_argument("-o", "--outdir", required=True)
    c.add_argument("--min-class-size", type=float, default=0.0, help="particles (default 0)")
    c.add_argument("--exclude", type=int, nargs="+", default=[], help="0-based classes")
    c.add_argument("--method", choices=("hierarchical", "spectral"), default="hierarchical")
    c.add_argument("--mask", help="mask .mrc at the class maps' box (default: mask_solvent.mrc)")
    c.add_argument(
        "--lowpass",
        default="auto",
        help="low-pass (Å) before correlating; 'auto' (coarsest class FSC=0.5 resolution) "
        "or 'none'",
    )
    c.add_argument("--formats", nargs="+", choices=("star", "cs"), default=["star", "cs"])


def _add_reclassify(sub: Any) -> None:
    c = sub.add_parser(
        "reclassify",
        help="classify the particles of chosen classes again",
        description="Start a new classification on the particles of some classes of RESULT_DIR "
        "(parameters inherited from its params.yaml unless given); provenance is recorded in "
        "the new params.yaml.",
    )
    c.add_argument("result_dir", help="parent classification OUTDIR")
    _add_class_choice(c)
    c.add_argument("-K", "--n-classes", dest="n_classes", type=int)
    c.add_argument("--filter-res", type=float, help="Å (default: the parent's)")
    c.add_argument("-o", "--outdir", required=True)
    c.add_argument("--init-mode", choices=("simple", "pca", "input"))
    c.add_argument("--symmetry")
    c.add_argument("--hard", action="store_true", default=None, help="force hard classification")
    c.add_argument("--max-fem-iters", type=int)
    c.add_argument("--oem-epochs", type=int)
    c.add_argument("--seed", type=int)
    c.add_argument("--device", choices=("cpu", "gpu"))
    c.add_argument("--solvent-mask", help="at the particles' box (default: auto)")
    c.add_argument("--focus-mask")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--resume", action="store_true")
    c.add_argument("--quiet", action="store_true")


def _add_select(sub: Any) -> None:
    c = sub.add_parser(
        "select",
        help="write the particles of chosen classes (optionally only the confident ones)",
        description="Write the particles of some classes of RESULT_DIR as selected.star / "
        "selected.cs (every column kept, class posteriors included) with selection.yaml. A "
        "particle is selected when its most likely class is one of --classes and, with "
        "--min-probability P, when its posterior summed over those classes is at least P.",
    )
    c.add_argument("result_dir", help="classification OUTDIR")
    _add_class_choice(c)
    c.add_argument("-o", "--outdir", required=True, help="output directory (not RESULT_DIR)")
    c.add_argument("--formats", nargs="+", choices=("star", "cs"), default=["star", "cs"])


def add_parsers(sub: Any) -> None:
    """Add the ``reconstruct``, ``regroup``, ``reclassify`` and ``select`` sub-commands."""
    _add_reconstruct(sub)
    _add_regroup(sub)
    _add_reclassify(sub)
    _add_select(sub)


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    seen: set[str] = set()

    def report(phase: str, done: int, total: int) -> None:
        if phase not in seen:
            seen.add(phase)
            print(f"{phase} …", file=sys.stderr)

    return report


def _run_reconstruct(a: argparse.Namespace, command: str) -> int:
    from ..io.particles import read_particles
    from .hetero import reconstruct_classes
    from .sources import load_result

    if Path(a.particles).is_dir():
        src: Any = load_result(a.particles, project_dir=a.project_dir)
    else:
        src = read_particles(a.particles, passthrough=a.passthrough, project_dir=a.project_dir)
    hr = reconstruct_classes(
        src,
        a.classes_from,
        n_classes=a.n_classes,
        mask=a.mask,
        symmetry=a.symmetry,
        filter_res_A=a.filter_res,
        per_particle_scale=a.scale,
        device=a.device,
        progress=_progress(a.quiet),
    )
    hr.write(a.outdir, command=command)
    print(hr.summary().to_string(index=False))
    print(f"outputs in {a.outdir}")
    return 0


def _lowpass(text: str) -> float | str | None:
    from ..errors import ParameterError

    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        msg = f"{text!r} is not a resolution in Å, 'auto' or 'none'"
        raise ParameterError("lowpass", msg) from None


def _run_regroup(a: argparse.Namespace, command: str) -> int:
    from .superclasses import regroup

    rg = regroup(
        _result(a.result_dir, a.project_dir),
        a.n_superclasses,
        mask=a.mask,
        min_class_size=a.min_class_size,
        exclude=a.exclude,
        method=a.method,
        lowpass_A=_lowpass(a.lowpass),
    )
    rg.write(a.outdir, formats=tuple(a.formats), command=command)
    sizes = rg.superclass_sizes()
    for j in range(rg.n_superclasses):
        ks = " ".join(str(k) for k in (rg.superclass_of_class == j).nonzero()[0])
        print(f"superclass {j:2d}: {int(sizes[j]):7d} particles  classes {ks}")
    if rg.reasons:
        print("left out: " + ", ".join(f"{k} ({r})" for k, r in sorted(rg.reasons.items())))
    print(f"outputs in {a.outdir}")
    return 0


def _run_reclassify(a: argparse.Namespace, command: str) -> int:
    from ..cli import ProgressPrinter
    from .subset import reclassify

    over = {
        "n_classes": a.n_classes,
        "filter_res_A": a.filter_res,
        "init_mode": a.init_mode,
        "symmetry": a.symmetry,
        "force_hard": a.hard,
        "max_fem_iters": a.max_fem_iters,
        "oem_epochs": a.oem_epochs,
        "seed": a.seed,
        "device": a.device,
    }
    job = reclassify(
        _result(a.result_dir, a.project_dir),
        a.classes,
        min_size=a.min_size,
        min_probability=a.min_probability,
        outdir=a.outdir,
        command=command,
        solvent_mask=a.solvent_mask,
        focus_mask=a.focus_mask,
        overwrite=a.overwrite,
        resume=a.resume,
        **{k: v for k, v in over.items() if v is not None},
    )
    prov = job.provenance or {}
    print(
        f"re-classifying {prov.get('n_particles')} particles of classes "
        f"{prov.get('classes')} from {a.result_dir}",
        file=sys.stderr,
    )
    job.subscribe(ProgressPrinter(bar=False if a.quiet else None))
    try:
        result = job.run()
    except KeyboardInterrupt:
        print("interrupted; OUTDIR holds the last checkpoint (use --resume)", file=sys.stderr)
        return 130
    if result is None:
        return 130
    print(result.class_table().to_string(index=False))
    print(f"outputs in {a.outdir}")
    return 0


def _run_select(a: argparse.Namespace, command: str) -> int:
    from .select import select_particles

    sel = select_particles(
        _result(a.result_dir, a.project_dir),
        a.classes,
        min_size=a.min_size,
        min_probability=a.min_probability,
    )
    sel.write(a.outdir, formats=tuple(a.formats), command=command)
    print(sel.table().to_string(index=False))
    p = f", summed posterior ≥ {sel.min_probability:g}" if sel.min_probability > 0 else ""
    n, total = len(sel.rows), len(sel.parent.labels)
    print(f"selected {n} of {total} particles (classes {' '.join(map(str, sel.classes))}{p})")
    if sel.min_probability > 0 and len(sel.classes) == sel.parent.n_classes:
        print(
            "note: with every class chosen the summed posterior is 1 and every particle passes; "
            "select classes one at a time to drop ambiguous particles"
        )
    print(f"outputs in {a.outdir}")
    return 0


def run(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the follow-up sub-command ``a.command``; returns the exit code."""
    command = "cryoclass " + shlex.join(argv)
    runner = {
        "reconstruct": _run_reconstruct,
        "regroup": _run_regroup,
        "reclassify": _run_reclassify,
        "select": _run_select,
    }[a.command]
    return int(runner(a, command))
