"""``cryoclass simulate``: write a simulated dataset with ground truth.

Example
-------
>>> import argparse
>>> from cryoclass.sim.cli import add_arguments
>>> p = argparse.ArgumentParser(prog="cryoclass simulate")
>>> add_arguments(p)
>>> args = p.parse_args(["-o", "out", "-n", "100", "--states", "closed,ligand"])
>>> args.n, args.states
(100, 'closed,ligand')
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import CryoclassError, ParameterError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument("-o", "--outdir", required=True, help="output directory (created)")
    parser.add_argument("-n", type=int, default=5000, help="number of particles (5000)")
    parser.add_argument("--box", type=int, default=128, help="box size in pixels (128)")
    parser.add_argument("--apix", type=float, default=1.5, help="pixel size in Å (1.5)")
    parser.add_argument(
        "--snr",
        type=float,
        default=0.05,
        help="var(noiseless CTF-modulated images over the box) / noise variance (0.05); "
        "0 or less for noiseless images",
    )
    parser.add_argument(
        "--states",
        default="closed,open,ligand",
        help="comma-separated states among closed, open, ligand, missing (closed,open,ligand)",
    )
    parser.add_argument(
        "--populations", default=None, help="comma-separated relative populations (equal)"
    )
    parser.add_argument(
        "--defocus", default="10000,25000", help="defocus range in Å, LOW,HIGH (10000,25000)"
    )
    parser.add_argument("--astigmatism", type=float, default=500.0, help="defocus U − V, Å (500)")
    parser.add_argument("--shift-sigma", type=float, default=3.0, help="origin s.d. in Å (3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="threads (all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _floats(name: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(name, f"expected comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``cryoclass simulate``; returns the exit status (0 on success, 2 on bad input)."""
    from .simulate import simulate

    t0 = time.perf_counter()
    try:
        defocus = _floats("--defocus", args.defocus) or []
        if len(defocus) != 2:
            raise ParameterError("--defocus", f"expected LOW,HIGH, got {args.defocus!r}")
        ds = simulate(
            n_particles=args.n,
            box=args.box,
            pixel_size_A=args.apix,
            snr=args.snr if args.snr > 0 else None,
            states=tuple(s.strip() for s in args.states.split(",") if s.strip()),
            populations=_floats("--populations", args.populations),
            defocus_range_A=(defocus[0], defocus[1]),
            astigmatism_A=args.astigmatism,
            shift_sigma_A=args.shift_sigma,
            seed=args.seed,
            n_jobs=args.jobs,
            progress=not args.quiet,
        )
        t_sim = time.perf_counter() - t0
        files = ds.write(args.outdir)
    except CryoclassError as exc:
        print(f"cryoclass simulate: error: {exc}", file=sys.stderr)
        return 2
    t_all = time.perf_counter() - t0
    counts = ", ".join(f"{s} {int((ds.labels == k).sum())}" for k, s in enumerate(ds.state_names))
    print(
        f"simulated {len(ds.labels)} particles (box {args.box}, {args.apix:g} Å/px, "
        f"SNR {ds.snr if ds.snr else 'inf'}, noise σ {ds.noise_sigma:.4g}) in {t_sim:.1f} s: "
        f"{counts}"
    )
    for name, path in files.items():
        print(f"  wrote {path}  ({name})")
    print(f"total {t_all:.1f} s")
    return 0
