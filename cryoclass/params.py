"""Parameters of a classification job: one frozen, validated dataclass.

Names follow CryoSPARC's "3D Classification" job (v4.5) with units in the names. Every field has
a ``help`` text and, where it applies, ``choices`` / ``min`` / ``max`` in its dataclass metadata,
which the CLI and the widgets' parameter form read so that all three agree.

Example
-------
>>> from cryoclass.params import ClassificationParams
>>> p = ClassificationParams(n_classes=4, filter_res_A=8.0)
>>> p.oem_batch_size_per_class
1000
>>> p.replace(force_hard=True).force_hard
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ParameterError

__all__ = [
    "ClassificationParams",
    "param_info",
    "read_params_file",
    "PARAM_GROUPS",
    "GUIDANCE_FILTER_RES",
]

GUIDANCE_FILTER_RES = (
    "Classify at just the resolution needed to see the difference of interest: "
    "3–6 Å for small changes in density (presence/absence of a ligand), "
    "6–10 Å for conformational changes of one domain relative to another, "
    "> 10 Å for presence/absence of a domain or binding partner."
)


def _p(default: Any, help: str, section: str = "advanced", **meta: Any) -> Any:
    meta.update(help=help, section=section)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class ClassificationParams:
    """All parameters of :class:`cryoclass.Classification` (CryoSPARC names, units in names)."""

    # ---- common
    n_classes: int = _p(2, "Number of classes K.", "common", min=1, cli="-K")
    filter_res_A: float = _p(
        0.0,
        "Filter resolution (Å): classification is done at this resolution; it sets the "
        "classification box and pixel size. Must be set. " + GUIDANCE_FILTER_RES,
        "common",
        min=0.0,
    )
    symmetry: str = _p(
        "C1", "Point-group symmetry enforced on every class (C1, Cn, Dn, T, O, I).", "common"
    )
    init_mode: str = _p(
        "pca",
        "Initialisation: 'pca' (default here; PCA of many random-subset reconstructions, then "
        "k-means — found the true states where 'simple' fell into local optima), 'simple' "
        "(CryoSPARC's default: K random-subset reconstructions), "
        "or "
        "'input' (the given initial volumes; their count must equal K).",
        "common",
        choices=("simple", "pca", "input"),
    )
    seed: int = _p(
        0, "Random seed: the same seed gives the same result on the same backend.", "common", min=0
    )
    device: str = _p(
        "cpu",
        "Where to compute: 'cpu' (NumPy/Numba) or 'gpu' (CuPy).",
        "common",
        choices=("cpu", "gpu"),
    )
    # ---- initialisation
    init_res_A: float = _p(20.0, "Low-pass resolution (Å) of the initial class volumes.", min=0.0)
    init_particles_per_class: int = _p(
        1000, "Particles in each random-subset reconstruction used for initialisation.", min=1
    )
    init_restarts: int = _p(
        4,
        "Candidate initialisations; each is refined by a short EM at the initial resolution and "
        "the one with the highest log-evidence is kept (guards against EM local optima).",
        min=1,
    )
    init_lowres_iters: int = _p(
        4,
        "Low-resolution EM iterations used to score each candidate initialisation (0 = off; "
        "the kept one is refined further, see init_refine_iters).",
        min=0,
    )
    init_refine_iters: int = _p(
        24,
        "At most this many further low-resolution EM iterations for the kept candidate only, "
        "before O-EM (0 = off; accelerated by SQUAREM, and stopped once fewer than 0.1 % of the "
        "particles change class). Cheap (small box, one candidate); at low SNR it decides the "
        "split of subtle states.",
        min=0,
    )
    pca_n_reconstructions: int = _p(
        24,
        "PCA init: random-subset reconstructions per candidate (at least 5 per class).",
        min=2,
    )
    pca_n_components: int = _p(2, "PCA init: principal components kept before k-means.", min=1)
    # ---- O-EM
    oem_learning_rate_init: float = _p(
        0.4,
        "O-EM learning rate init: larger values generally give fewer populated classes.",
        min=0.0,
        max=1.0,
    )
    oem_learning_rate_halflife_pct: float = _p(
        50.0, "O-EM learning rate half-life, in % of the O-EM iterations.", min=0.0
    )
    oem_batch_size_per_class: int = _p(1000, "O-EM batch size per class (batch = this × K).", min=1)
    oem_epochs: int = _p(2, "Number of O-EM epochs (passes over the data in batches).", min=0)
    # ---- F-EM and convergence
    max_fem_iters: int = _p(20, "Maximum number of F-EM (full-batch) iterations.", min=0)
    convergence_pct: float = _p(
        2.0,
        "Convergence criterion: stop F-EM when fewer than this % of particles switch class.",
        min=0.0,
        max=100.0,
    )
    rms_change_check: bool = _p(True, "RMS density change convergence check (secondary criterion).")
    rms_change_threshold: float = _p(
        0.01,
        "Stop F-EM when the mask-weighted RMS change of the class volumes, relative to "
        "their RMS, falls below this.",
        min=0.0,
    )
    # ---- class similarity
    class_similarity: float = _p(
        0.5,
        "Initial class similarity β (posterior tempering r ∝ p^(1−β)), annealed to 0.",
        min=0.0,
        max=1.0,
    )
    class_similarity_anneal_start: int = _p(
        2, "O-EM iteration at which annealing of the class similarity starts.", min=0
    )
    class_similarity_anneal_end: int = _p(
        10, "O-EM iteration at which the class similarity reaches 0.", min=0
    )
    auto_tune_class_similarity: bool = _p(
        False,
        "Auto-tune the initial class similarity so that the mean per-particle class ESS "
        "≈ target_class_ess_fraction × K.",
    )
    target_class_ess_fraction: float = _p(
        0.75, "Target mean class ESS as a fraction of K.", min=0.0, max=1.0
    )
    # ---- reconstruction and scale
    force_hard: bool = _p(
        False, "Force hard classification (one-hot posteriors, no weighted back-projection)."
    )
    per_particle_scale: str = _p(
        "optimal",
        "Per-particle scale: 'optimal' (fit against the consensus), 'input' "
        "(upstream alignments3D/alpha or rlnCtfScalefactor), or 'none' (1.0).",
        choices=("optimal", "input", "none"),
    )
    scale_shrinkage: bool = _p(
        True,
        "Optimal per-particle scale: shrink each image's noisy fit towards the population "
        "(empirical Bayes, by its estimated noise); off = the raw per-image fit.",
    )
    scale_min: float = _p(0.2, "Lower clamp of the optimal per-particle scale.", min=0.0)
    scale_max: float = _p(5.0, "Upper clamp of the optimal per-particle scale.", min=0.0)
    use_fsc_filter: bool = _p(
        True,
        "Filter each class by its half-set FSC. Off = RELION-style regulariser with tau2_fudge.",
    )
    shrink_to_consensus: bool = _p(
        True,
        "Regularise each class towards the consensus instead of towards zero: a class is the "
        "consensus plus its contrast against the pooled mean of all classes, regularised by "
        "the FSC of the two half-set contrasts. What is reproducible about a class is its "
        "difference from the others; this removes most of the noise from the class comparison.",
    )
    local_shrink_A: float = _p(
        10.0,
        "With shrink_to_consensus: also shrink the class differences voxel by voxel, by their "
        "local signal-to-noise in a Gaussian neighbourhood of this σ (Å), estimated from the "
        "half-maps, all classes jointly. Keeps a small real difference (a ligand) and removes "
        "the noise elsewhere. 0 = off.",
        min=0.0,
    )
    tau2_fudge: float = _p(
        4.0, "Regularisation T when FSC filtering is off (RELION's --tau2_fudge).", min=0.0
    )
    highpass_res_A: float = _p(
        0.0, "Optional high-pass (Å) of the class volumes; 0 = off.", min=0.0
    )
    min_class_size: float = _p(
        10.0, "A class whose effective size falls below this is re-seeded (and logged).", min=0.0
    )
    # ---- masks
    mask_threshold: float = _p(
        0.2,
        "Auto solvent mask: threshold as a fraction of the low-passed consensus maximum.",
        min=0.0,
        max=1.0,
    )
    mask_dilate_A: float = _p(
        10.0, "Auto solvent mask: dilation (Å), mask = 1 within this.", min=0.0
    )
    mask_soft_edge_A: float = _p(10.0, "Auto solvent mask: cosine soft edge width (Å).", min=0.0)
    # ---- outputs
    reorder_by_size: bool = _p(
        False, "Reorder classes by size at the end (must be off when output_every_fem is on)."
    )
    output_every_fem: bool = _p(False, "Write outputs after every F-EM iteration.")
    # ---- engine
    pad: int = _p(
        2, "Fourier padding factor of the class volumes (trilinear interpolation).", min=1, max=4
    )
    chunk_size: int = _p(1024, "Particles per kernel call (bounds working memory).", min=1)
    cache_dir: str = _p(
        "",
        "Directory for the on-disk cache of preprocessed particles (cropped, recentred, CTF on "
        "the classification disc). The passes stream it chunk by chunk, so memory does not grow "
        "with the number of particles; later runs with the same particles and filter resolution "
        "reuse it, and it is rebuilt when they change. Empty: keep the particles in memory.",
    )
    memory_limit_GB: float = _p(
        0.0,
        "Most memory (GB) the preprocessed particles may take in RAM. Larger datasets are "
        "streamed from the particle cache (cache_dir, or OUTDIR/particle_cache when only an "
        "output directory is given); without either they are refused. 0 = no limit.",
        min=0.0,
    )

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            t = f.type if isinstance(f.type, str) else f.type.__name__
            if t == "str" and not isinstance(v, str):
                raise ParameterError(f.name, f"must be text, got {v!r}")
            if t == "bool" and not isinstance(v, bool):
                raise ParameterError(f.name, f"must be true or false, got {v!r}")
            if t in ("int", "float"):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ParameterError(f.name, f"must be a number, got {v!r}")
                if v != v or v in (float("inf"), float("-inf")):
                    raise ParameterError(f.name, f"must be finite, got {v!r}")
                if t == "int" and int(v) != v:
                    raise ParameterError(f.name, f"must be a whole number, got {v!r}")
                lo, hi = f.metadata.get("min"), f.metadata.get("max")
                if lo is not None and v < lo:
                    raise ParameterError(f.name, f"must be ≥ {lo}, got {v!r}")
                if hi is not None and v > hi:
                    raise ParameterError(f.name, f"must be ≤ {hi}, got {v!r}")
            ch = f.metadata.get("choices")
            if ch is not None and v not in ch:
                raise ParameterError(f.name, f"must be one of {', '.join(ch)}; got {v!r}")
        if self.filter_res_A <= 0:
            raise ParameterError("filter_res_A", "must be set (a resolution in Å, e.g. 8)")
        if self.reorder_by_size and self.output_every_fem:
            raise ParameterError(
                "reorder_by_size", "must be off when output_every_fem is on (as in CryoSPARC)"
            )
        if self.oem_epochs == 0 and self.max_fem_iters == 0:
            raise ParameterError(
                "max_fem_iters",
                "must be ≥ 1 when oem_epochs is 0: without an E-step no particle is assigned",
            )
        if self.scale_min > self.scale_max:
            raise ParameterError("scale_min", "must not exceed scale_max")
        if self.class_similarity_anneal_end < self.class_similarity_anneal_start:
            raise ParameterError(
                "class_similarity_anneal_end", "must not be before class_similarity_anneal_start"
            )
        from .core.symmetry import parse_symmetry  # validates the symbol

        try:
            letter, order = parse_symmetry(self.symmetry)
        except ValueError as e:
            raise ParameterError("symmetry", str(e)) from None
        if order * (2 if letter == "D" else 1) > 120:
            raise ParameterError(
                "symmetry", f"{self.symmetry!r} has more than 120 operators (at most C120, D60)"
            )

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> ClassificationParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassificationParams:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ParameterError(sorted(unknown)[0], "unknown parameter")
        return cls(**d)


#: Form groups, in order, and the label of each parameter in them: CryoSPARC's own label where
#: its job has the parameter (the v4.5 job page), a plain description otherwise. The "common"
#: parameters come first, then one group per stage of the job.
PARAM_GROUPS: dict[str, dict[str, str]] = {
    "Common": {
        "n_classes": "Number of classes",
        "filter_res_A": "Filter resolution (Å)",
        "symmetry": "Symmetry",
        "init_mode": "Initialization mode",
        "seed": "Random seed",
        "device": "Compute device",
    },
    "Initialization": {
        "init_res_A": "Initial resolution (Å)",
        "init_particles_per_class": "Particles per init reconstruction",
        "init_restarts": "Initialization candidates",
        "init_lowres_iters": "Low-res EM iters per candidate",
        "init_refine_iters": "Max low-res EM iters, kept candidate",
        "pca_n_reconstructions": "PCA: number of reconstructions",
        "pca_n_components": "PCA: number of components",
    },
    "O-EM": {
        "oem_learning_rate_init": "O-EM learning rate init",
        "oem_learning_rate_halflife_pct": "O-EM learning rate halflife (%)",
        "oem_batch_size_per_class": "O-EM batch size (per class)",
        "oem_epochs": "Number of O-EM epochs",
    },
    "F-EM and convergence": {
        "max_fem_iters": "Maximum F-EM iterations",
        "convergence_pct": "Convergence criterion (%)",
        "rms_change_check": "RMS density change convergence check",
        "rms_change_threshold": "RMS density change threshold",
    },
    "Class similarity": {
        "class_similarity": "Class similarity",
        "class_similarity_anneal_start": "Class similarity anneal start iter",
        "class_similarity_anneal_end": "Class similarity anneal end iter",
        "auto_tune_class_similarity": "Auto-tune initial class similarity",
        "target_class_ess_fraction": "Target class ESS fraction",
        "force_hard": "Force hard classification",
    },
    "Scale and regularisation": {
        "per_particle_scale": "Per-particle scale",
        "scale_shrinkage": "Shrink optimal scales",
        "scale_min": "Minimum scale",
        "scale_max": "Maximum scale",
        "use_fsc_filter": "Use FSC to filter each class",
        "shrink_to_consensus": "Regularise towards the consensus",
        "local_shrink_A": "Local shrinkage width (Å)",
        "tau2_fudge": "Regularisation parameter T",
        "highpass_res_A": "High-pass resolution (Å)",
        "min_class_size": "Minimum class size (re-seed below)",
    },
    "Solvent mask": {
        "mask_threshold": "Threshold (fraction of max)",
        "mask_dilate_A": "Dilation (Å)",
        "mask_soft_edge_A": "Soft edge (Å)",
    },
    "Output": {
        "reorder_by_size": "Reorder classes by size",
        "output_every_fem": "Output data after every F-EM iter",
    },
    "Compute": {
        "pad": "Fourier padding factor",
        "chunk_size": "Particles per kernel call",
        "cache_dir": "Particle cache directory",
        "memory_limit_GB": "Memory limit for particles (GB)",
    },
}


def param_info() -> list[dict[str, Any]]:
    """Field descriptions for forms and CLIs: name, type, default, help, section, limits, and
    the form's ``label`` and ``group`` (:data:`PARAM_GROUPS`)."""
    where = {n: (g, lab) for g, members in PARAM_GROUPS.items() for n, lab in members.items()}
    out = []
    for f in fields(ClassificationParams):
        t = f.type if isinstance(f.type, str) else f.type.__name__
        group, label = where.get(f.name, ("Other", f.name))
        out.append(
            {
                "name": f.name,
                "type": t,
                "default": f.default,
                "label": label,
                "group": group,
                **dict(f.metadata),
            }
        )
    return out


def read_params_file(path: str) -> dict[str, Any]:
    """The parameters in ``path``: a classification's ``params.yaml`` (its ``params``
    section) or a YAML mapping of parameter names to values. Raises
    :class:`~cryoclass.errors.InputFileError` naming the file for a missing, unreadable or
    malformed file, :class:`~cryoclass.errors.ParameterError` for an unknown name."""
    import yaml

    from .errors import InputFileError

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise InputFileError(path, f"cannot read the parameter file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise InputFileError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
        doc = doc["params"]  # a params.yaml written by cryoclass
    if not isinstance(doc, dict):
        raise InputFileError(path, "expected a mapping of parameter names to values")
    unknown = sorted(set(doc) - set(ClassificationParams.__dataclass_fields__))
    if unknown:
        raise ParameterError(str(unknown[0]), f"unknown parameter in {path}")
    return dict(doc)
