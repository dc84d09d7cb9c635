"""The result of a classification: assignments, volumes, diagnostics data, and writers.

Output directory layout (:meth:`ClassificationResult.write`)::

    particles.star  particles.cs            all particles with class, posteriors, ESS
    class_NN.star   class_NN.cs             particles per class (NN = 0-based class, as CryoSPARC)
    class_NN.mrc    volumes.zip             class volumes (classification box and pixel size)
    run_model.star  run_data.star           RELION Class3D-style summary (→ particles.star) for
                                            RELION's class selection (cryoclass.io.relion_model)
    consensus.mrc   mask_solvent.mrc  mask_focus.mrc
    iterations.csv  params.yaml             per-iteration records; parameters + version + command
    diagnostics/    ess_histogram.csv  class_sizes.csv  class_flow_edges.csv
                    class_flow_matrix_itNN.csv  fsc.csv  diff_slices.npz

``rlnClassNumber`` in ``.star`` is 1-based (class_00 ↔ rlnClassNumber 1).

Example
-------
>>> from cryoclass.engine.result import ClassificationResult   # doctest: +SKIP
>>> res.class_table()                                           # doctest: +SKIP
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..io.mrc import atomic_path, write_mrc

__all__ = ["ClassificationResult"]


@dataclass
class ClassificationResult:
    """Everything a classification produced (NumPy arrays; volumes in density units)."""

    params: Any
    particles: Any
    posteriors: np.ndarray  #: (N, K) float32
    ess: np.ndarray  #: (N,)
    scale: np.ndarray  #: (N,) per-particle scale α
    volumes: np.ndarray  #: (K, Dc, Dc, Dc) float32
    consensus: np.ndarray
    solvent_mask: np.ndarray
    focus_mask: np.ndarray
    fsc: np.ndarray  #: (K, S) half-set FSC per class
    consensus_fsc: np.ndarray  #: (S,)
    fsc_freq_invA: np.ndarray  #: (S,)
    pixel_size_A: float  #: classification pixel size (Å)
    box_c: int
    records: list[dict[str, Any]]
    converged: bool
    reason: str
    log: list[str] = field(default_factory=list)
    command: str = ""
    #: Where the particles came from when this classification re-classifies a subset of another
    #: (``{parent_outdir, parent_command, classes}``); written into ``params.yaml``.
    provenance: dict[str, Any] | None = None
    #: RELION project directory that ``run_model.star``'s map paths are relative to (None: the
    #: current directory when written).
    project_dir: str | None = None

    # ------------------------------------------------------------------ derived data
    @property
    def n_classes(self) -> int:
        return int(self.posteriors.shape[1])

    @property
    def hard(self) -> np.ndarray:
        """(N,) 0-based class of highest posterior."""
        return np.argmax(self.posteriors, axis=1)

    @property
    def assignments(self) -> pd.DataFrame:
        """uid, class (0-based), posterior_k, max_posterior, ess, scale — one row per particle."""
        df = pd.DataFrame({"uid": self.particles.meta["uid"].to_numpy(), "class": self.hard})
        for k in range(self.n_classes):
            df[f"posterior_{k}"] = self.posteriors[:, k]
        df["max_posterior"] = self.posteriors.max(1)
        df["ess"] = self.ess
        df["scale"] = self.scale
        return df

    @property
    def iterations(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in r.items() if k != "flow"} for r in self.records])

    def fsc_resolution_A(self) -> np.ndarray:
        from ..core.fsc import resolution_at

        return np.array([resolution_at(self.fsc_freq_invA, f) for f in self.fsc])

    def class_table(self) -> pd.DataFrame:
        """Per class: size (hard count), effective size (Σ posterior), fraction, FSC=0.143
        resolution (Å), mean ESS of its members."""
        K, hard = self.n_classes, self.hard
        size = np.bincount(hard, minlength=K)
        ess_mean = np.array([self.ess[hard == k].mean() if size[k] else np.nan for k in range(K)])
        return pd.DataFrame(
            {
                "class": np.arange(K),
                "size": size,
                "effective_size": self.posteriors.sum(0),
                "fraction": size / max(len(hard), 1),
                "fsc_res_A": self.fsc_resolution_A(),
                "mean_ess": ess_mean,
            }
        )

    def ess_histogram(self, bins: int = 40) -> pd.DataFrame:
        """Histogram of per-particle class ESS on [1, K]."""
        counts, edges = np.histogram(self.ess, bins=bins, range=(1.0, max(self.n_classes, 1.0001)))
        return pd.DataFrame({"ess_lo": edges[:-1], "ess_hi": edges[1:], "count": counts})

    def class_flow(self) -> list[tuple[int, np.ndarray]]:
        """(F-EM iteration, K×K flow matrix rows = previous class, columns = current)."""
        return [(r["iteration"], np.asarray(r["flow"])) for r in self.records if r.get("flow")]

    def class_flow_edges(self) -> pd.DataFrame:
        rows = [
            (it, i, j, int(m[i, j])) for it, m in self.class_flow() for i, j in zip(*np.nonzero(m))
        ]
        return pd.DataFrame(rows, columns=["iteration", "from_class", "to_class", "count"])

    def class_sizes(self) -> pd.DataFrame:
        """Effective class sizes over iterations (wide: one column per class)."""
        it = self.iterations
        cols = ["phase", "iteration", "global_iteration"] + [
            f"mass_{k}" for k in range(self.n_classes)
        ]
        return it[cols] if len(it) else pd.DataFrame(columns=cols)

    def diff_slices(self) -> np.ndarray:
        """(K, 3, Dc, Dc) central slices (z, y, x planes) of (V_k − V_cons)·M_f."""
        d = (self.volumes - self.consensus[None]) * self.focus_mask[None]
        c = self.box_c // 2
        return np.stack([d[:, c], d[:, :, c], d[:, :, :, c]], axis=1)

    # ------------------------------------------------------------------ writers
    def _star_extra(self, idx: np.ndarray) -> dict[str, Any]:
        p = self.posteriors[idx]
        extra: dict[str, Any] = {
            "rlnClassNumber": p.argmax(1) + 1,
            "rlnMaxValueProbDistribution": p.max(1),
        }
        for k in range(self.n_classes):
            extra[f"rlnClassPosterior{k + 1:02d}"] = p[:, k]
        return extra

    def _cs_extra(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        p = self.posteriors[idx]
        extra = {
            "alignments3D/class": p.argmax(1).astype(np.uint32),
            "alignments3D/class_ess": self.ess[idx].astype(np.float32),
            "alignments3D/alpha": self.scale[idx].astype(np.float32),
        }
        for k in range(self.n_classes):
            extra[f"alignments_class3D_{k}/class_posterior"] = p[:, k].astype(np.float32)
        return extra

    def _particles_on_disk(self, outdir: Path) -> Any:
        """In-memory particles get their images written once (particles.mrcs) so that the star
        files have something to point at."""
        parts = self.particles
        if parts.source_format == "memory" or not str(parts.meta["image_path"].iloc[0]):
            from ..io.particles import write_particles_with_images

            parts = write_particles_with_images(
                outdir / "particles.star", parts, outdir / "particles.mrcs"
            )
            self.particles = parts
        return parts

    def write_particles(
        self, outdir: Path, name: str, idx: np.ndarray, formats: tuple[str, ...]
    ) -> list[Path]:
        from ..io.cryosparc import write_cs
        from ..io.star import write_star

        parts = self.particles.subset(idx)
        out = []
        if "star" in formats:
            write_star(outdir / f"{name}.star", parts, extra=self._star_extra(idx))
            out.append(outdir / f"{name}.star")
        if "cs" in formats:
            write_cs(outdir / f"{name}.cs", parts, extra=self._cs_extra(idx))
            out.append(outdir / f"{name}.cs")
        return out

    def write_classes(
        self,
        outdir: str | os.PathLike,
        classes: list[int],
        formats: tuple[str, ...] = ("star", "cs"),
        min_probability: float = 0.0,
    ) -> list[Path]:
        """Write the particles (``class_NN.star/.cs``) and volumes (``class_NN.mrc``) of the
        chosen classes, and ``selected.star/.cs`` with all their particles together. With
        ``min_probability`` P > 0 only confident particles are written: of class k those with
        posterior ≥ P, in ``selected`` those whose posterior summed over the chosen classes is
        ≥ P (:func:`cryoclass.followup.select.selection_rows`); the volumes are unchanged."""
        from ..followup.select import selection_rows

        hard, post = self.hard, self.posteriors
        sel = selection_rows(hard, post, classes, min_probability)  # checks P before writing
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        self._particles_on_disk(outdir)
        files: list[Path] = []
        for k in classes:
            idx = selection_rows(hard, post, [k], min_probability)
            files += self.write_particles(outdir, f"class_{k:02d}", idx, formats)
            write_mrc(outdir / f"class_{k:02d}.mrc", self.volumes[k], self.pixel_size_A)
            files.append(outdir / f"class_{k:02d}.mrc")
        files += self.write_particles(outdir, "selected", sel, formats)
        return files

    def write(
        self,
        outdir: str | os.PathLike,
        formats: tuple[str, ...] = ("star", "cs"),
        per_class: bool = True,
    ) -> list[Path]:
        """Write every output (see the module docstring); each file atomically."""
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        self._particles_on_disk(outdir)
        files = self.write_particles(outdir, "particles", np.arange(len(self.hard)), formats)
        K, apix = self.n_classes, self.pixel_size_A
        if per_class:
            members = {k: np.nonzero(self.hard == k)[0] for k in range(K)}
            if "star" in formats:  # the rows of particles.star, copied (same columns and values)
                from ..io.star import write_star_subsets

                write_star_subsets(
                    outdir / "particles.star",
                    {str(outdir / f"class_{k:02d}.star"): members[k] for k in range(K)},
                )
            for k in range(K):
                if "star" in formats:
                    files.append(outdir / f"class_{k:02d}.star")
                if "cs" in formats:
                    files += self.write_particles(outdir, f"class_{k:02d}", members[k], ("cs",))
        for k in range(K):
            write_mrc(outdir / f"class_{k:02d}.mrc", self.volumes[k], apix)
            files.append(outdir / f"class_{k:02d}.mrc")
        files.append(self._write_zip(outdir / "volumes.zip"))
        if "star" in formats:
            files += self.write_relion_model(outdir)
        for name, vol in (
            ("consensus", self.consensus),
            ("mask_solvent", self.solvent_mask),
            ("mask_focus", self.focus_mask),
        ):
            write_mrc(outdir / f"{name}.mrc", vol, apix)
            files.append(outdir / f"{name}.mrc")
        files.append(self._write_table(outdir / "iterations.csv", self.iterations))
        files.append(self._write_params(outdir / "params.yaml"))
        files += self._write_diagnostics(outdir / "diagnostics")
        return files

    def write_relion_model(
        self, outdir: str | os.PathLike, project_dir: str | os.PathLike | None = None
    ) -> list[Path]:
        """``run_model.star`` + ``run_data.star`` (→ ``particles.star``) in ``outdir``, which
        already holds ``particles.star`` and the ``class_NN.mrc`` maps: what RELION's class
        selection (``relion_display --class``, the Subset selection job) opens. Map paths are
        relative to ``project_dir`` (default: the result's ``project_dir``, else the current
        directory), as RELION writes them."""
        from ..io.relion_model import model_blocks, project_relative, write_relion_model

        outdir = Path(outdir)
        refs = [
            project_relative(outdir / f"class_{k:02d}.mrc", project_dir or self.project_dir)
            for k in range(self.n_classes)
        ]
        p = self.params
        blocks = model_blocks(
            refs,
            class_distribution=self.posteriors.mean(0),
            resolution_A=self.fsc_resolution_A(),
            fsc=self.fsc,
            fsc_freq_invA=self.fsc_freq_invA,
            box_px=self.box_c,
            pixel_size_A=self.pixel_size_A,
            current_resolution_A=max(float(p.filter_res_A), 2.0 * self.pixel_size_A),
            average_pmax=float(self.posteriors.max(1).mean()),
            tau2_fudge=None if p.use_fsc_filter else float(p.tau2_fudge),
        )
        return write_relion_model(outdir, outdir / "particles.star", blocks)

    def _write_zip(self, path: Path) -> Path:
        """All class volumes as one series (the class_NN.mrc files already written)."""
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
            for k in range(self.n_classes):
                zf.write(path.parent / f"class_{k:02d}.mrc", f"class_{k:02d}.mrc")
        return path

    @staticmethod
    def _write_table(path: Path, df: pd.DataFrame) -> Path:
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        return path

    def _write_params(self, path: Path) -> Path:
        import yaml

        doc = {
            "cryoclass_version": __version__,
            "command": self.command,
            "params": self.params.to_dict(),
            "classification_box": self.box_c,
            "classification_pixel_size_A": self.pixel_size_A,
            "converged": self.converged,
            "stop_reason": self.reason,
            "log": list(self.log),
        }
        if self.provenance:
            doc["provenance"] = dict(self.provenance)
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
        return path

    def _write_diagnostics(self, d: Path) -> list[Path]:
        d.mkdir(exist_ok=True)
        out = [
            self._write_table(d / "ess_histogram.csv", self.ess_histogram()),
            self._write_table(d / "class_sizes.csv", self.class_sizes()),
            self._write_table(d / "class_flow_edges.csv", self.class_flow_edges()),
            self._write_table(d / "class_table.csv", self.class_table()),
        ]
        for it, m in self.class_flow():
            out.append(self._write_table(d / f"class_flow_matrix_it{it:02d}.csv", pd.DataFrame(m)))
        fsc = pd.DataFrame(
            {
                "freq_invA": self.fsc_freq_invA,
                "consensus": self.consensus_fsc,
                **{f"class_{k:02d}": self.fsc[k] for k in range(self.n_classes)},
            }
        )
        out.append(self._write_table(d / "fsc.csv", fsc))
        with atomic_path(d / "diff_slices.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, diff_slices=self.diff_slices())
        out.append(d / "diff_slices.npz")
        return out
