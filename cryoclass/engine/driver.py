"""The classification algorithm as a generator: preprocess → consensus → init → O-EM → F-EM.

:class:`cryoclass.engine.job.Classification` drives it one ``next()`` at a time (``step()``),
so the same code runs in a script, the CLI and a notebook's background thread. It emits events
through ``emit`` and checkpoints through ``save`` after every iteration; ``state`` may come from
a checkpoint, in which case finished phases are skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..core.masks import auto_solvent_mask, spherical_mask
from ..core.slices import volumes_to_grid
from ..errors import InputFileError, ParameterError
from ..events import ClassesReseeded, IterationFinished, PhaseStarted, Progress
from ..params import ClassificationParams
from .em import (
    class_similarity_at,
    flow_matrix,
    learning_rate,
    noise_and_scale,
    tune_class_similarity,
)
from .init import init_input, initial_volumes
from .passes import consensus_pass, em_pass, power_pass, stats_pass
from .problem import Problem
from .reconstruct import ClassStats, ConsensusPrior, reconstruct
from .state import EMState

__all__ = ["run_algorithm"]


#: O-EM iterations are checkpointed at most this often (s), counted from the start of the phase
#: (the init checkpoint comes just before it): each mid-O-EM checkpoint writes the running
#: statistics (33 MB at box 48, K = 3; ~65 ms with fsync, 0.9 s of a 13 s job at N = 20 000 when
#: written after every batch; 0.23-0.27 s each at N = 5 000, where the first and the last batch
#: were checkpointed). The last O-EM iteration is always checkpointed, as the start of F-EM,
#: which needs no statistics. A kill loses at most this much O-EM work; the resumed run is the
#: same (batches and learning rates follow the iteration).
OEM_CHECKPOINT_EVERY_S = 10.0


class Driver:
    """Holds the problem, parameters and mutable EM state; ``run()`` is the generator."""

    def __init__(
        self,
        prob: Problem,
        params: ClassificationParams,
        xp: Any,
        state: EMState,
        emit: Callable[[Any], None],
        check: Callable[[], None],
        save: Callable[[EMState], None],
        inputs: dict[str, Any],
        t0: float | None = None,
    ):
        """``t0``: the job's start (``time.perf_counter()``), the origin of the events'
        ``time_s`` (default: now)."""
        self.prob, self.p, self.xp, self.st = prob, params, xp, state
        self.emit, self.check, self.save, self.inputs = emit, check, save, inputs
        self.geom = prob.geom
        self.K = params.n_classes
        self.t_start = time.perf_counter() if t0 is None else t0
        g = self.geom
        self.counts = np.bincount(g.shell, weights=g.weight, minlength=g.n_shells)
        self.sym_ops = inputs.get("sym_ops")
        self.times: dict[str, list[float]] = {"oem": [], "fem": []}
        self._last_oem_save = -math.inf
        self._prior: ConsensusPrior | None = None  # built at the first M-step

    # ------------------------------------------------------------------ helpers
    def now(self) -> float:
        return time.perf_counter() - self.t_start

    def wsig(self) -> Any:
        w = self.geom.weight / self.st.sig2[self.geom.shell]
        return self.xp.asarray(w.astype(np.float32))

    def alpha(self) -> Any:
        return self.xp.asarray(self.st.alpha.astype(np.float32))

    def effective_grid(self) -> Any:
        """Class grids of ``M_f·V_k + (1 − M_f)·V_cons`` (focused classification)."""
        xp, st = self.xp, self.st
        vols = xp.asarray(st.volumes)
        focus = self.inputs.get("focus_mask")
        if focus is not None:
            f = xp.asarray(focus)[None]
            vols = f * vols + (1 - f) * xp.asarray(st.consensus)[None]
        return volumes_to_grid(vols.astype(np.float32), self.geom)

    def _recon(self, stats: ClassStats, tau2_prev: Any, mask: Any, **kw: Any):
        return reconstruct(
            stats,
            self.geom,
            self.xp.asarray(mask),
            use_fsc_filter=self.p.use_fsc_filter,
            tau2_prev=tau2_prev,
            tau2_fudge=self.p.tau2_fudge,
            sym_ops=self.sym_ops,
            **kw,
        )

    def _postprocess(self, vols: Any) -> Any:
        if self.p.highpass_res_A > 0:
            from ..core.filters import highpass

            vols = highpass(vols, self.p.highpass_res_A, self.prob.pixel_size_c_A, kind="cosine")
        return vols

    # ------------------------------------------------------------------ phases
    def consensus_phase(self) -> None:
        """Noise model, per-particle scale, consensus map and solvent mask."""
        p, prob, xp, st = self.p, self.prob, self.xp, self.st
        self.emit(PhaseStarted(phase="consensus", time_s=self.now()))
        # initial noise power: the data's own power per shell (noise-dominated at low SNR)
        power = power_pass(prob, p.chunk_size, self.check)
        st.sig2 = np.maximum(power / (prob.n * np.maximum(self.counts, 1)), 1e-30)
        st.sig2[0] = st.sig2[1]
        mode = p.per_particle_scale
        st.alpha = (
            to_numpy(prob.scale_input).astype(np.float64) if mode == "input" else np.ones(prob.n)
        )
        Dc = prob.box_c
        sphere = spherical_mask(Dc, 0.42 * Dc, 0.06 * Dc, xp=xp)
        mask0 = self.inputs.get("solvent_mask")
        mask0 = sphere if mask0 is None else xp.asarray(mask0)
        stats = consensus_pass(prob, self.wsig(), self.alpha(), p.chunk_size, self.check)
        rec = self._recon(stats, None, mask0)
        sxx, sxp, spp = stats_pass(prob, rec.volumes[0], p.chunk_size, self.check)
        st.sig2, st.alpha = noise_and_scale(
            sxx, sxp, spp, self.counts, mode, to_numpy(prob.scale_input), p.scale_min,
            p.scale_max, shrink=p.scale_shrinkage,
        )  # fmt: skip
        stats = consensus_pass(prob, self.wsig(), self.alpha(), p.chunk_size, self.check)
        rec = self._recon(stats, rec.tau2, mask0)
        if self.inputs.get("solvent_mask") is None:
            try:
                solvent = auto_solvent_mask(
                    rec.volumes[0],
                    prob.pixel_size_c_A,
                    threshold=p.mask_threshold,
                    lowpass_A=max(15.0, 2.5 * prob.pixel_size_c_A),
                    dilate_A=p.mask_dilate_A,
                    soft_edge_A=p.mask_soft_edge_A,
                )
            except ParameterError as e:  # an empty consensus: nothing to threshold
                raise InputFileError(
                    "particles",
                    "no signal: the consensus map is empty (all images zero, or CTF ≈ 0 "
                    f"everywhere), so no solvent mask can be made ({e.problem}); "
                    "give a solvent mask or check the images and CTF parameters",
                ) from None
            st.solvent_mask = to_numpy(solvent * sphere).astype(np.float32)
        else:
            st.solvent_mask = to_numpy(mask0).astype(np.float32)
        rec = self._recon(stats, rec.tau2, st.solvent_mask)
        st.consensus = to_numpy(rec.volumes[0])
        st.consensus_fsc = rec.fsc[0]
        st.consensus_tau2 = rec.tau2
        fm = self.inputs.get("focus_mask")
        st.focus_mask = (
            np.ones((Dc,) * 3, np.float32) if fm is None else np.asarray(to_numpy(fm), np.float32)
        )
        st.phase = "init"

    def init_phase(self) -> None:
        p, prob, st = self.p, self.prob, self.st
        self.emit(PhaseStarted(phase="init", time_s=self.now()))
        mask = self.xp.asarray(st.solvent_mask)
        common = dict(
            wsig=self.wsig(),
            alpha=self.alpha(),
            mask=mask,
            tau2=st.consensus_tau2,
            chunk_size=p.chunk_size,
            check=self.check,
        )
        if p.init_mode == "input":
            vols = init_input(
                self.inputs["init_volumes"], prob, self.xp.asarray(st.consensus), mask
            )
        else:
            vols, scores = initial_volumes(prob, p.init_mode, self.K, p, **common)
            if len(scores) > 1:
                best = int(np.argmax(scores))
                msg = (
                    f"initialisation: {len(scores)} candidates scored "
                    f"{', '.join(f'{x:.1f}' for x in scores)} (mean log-evidence); "
                    f"kept #{best}"
                )
                st.log.append(msg)
        st.volumes = to_numpy(vols).astype(np.float32)
        st.tau2 = np.repeat(st.consensus_tau2, self.K, axis=0)
        st.log_prior = np.full(self.K, -math.log(self.K))
        st.phase = "oem"
        st.iteration = 0

    def oem_plan(self) -> tuple[int, int, int]:
        """(batch size, batches per epoch, total O-EM iterations)."""
        B = min(self.prob.n, self.p.oem_batch_size_per_class * self.K)
        nb = math.ceil(self.prob.n / B)
        return B, nb, self.p.oem_epochs * nb

    def oem_phase(self) -> Iterator[None]:
        p, st = self.p, self.st
        B, nb, T = self.oem_plan()
        self.emit(PhaseStarted(phase="oem", total_iterations=T, time_s=self.now()))
        t_half = p.oem_learning_rate_halflife_pct / 100.0 * T
        if st.stats is None:
            st.stats = ClassStats.zeros(self.geom, self.K, self.xp)
        self._last_oem_save = time.perf_counter()
        while st.iteration < T:
            t = st.iteration
            t0 = time.perf_counter()
            epoch, b = divmod(t, nb)
            perm = np.random.default_rng([p.seed, 100 + epoch]).permutation(self.prob.n)
            idx = np.sort(perm[b * B : (b + 1) * B])
            eta = learning_rate(t, p.oem_learning_rate_init, t_half)
            ll_known = None
            if p.auto_tune_class_similarity and st.beta0 is None:
                # the batch's log-likelihoods tune β, then serve its E-step below (same volumes)
                ll_known = self._e_step(idx, force_hard=False).ll
                st.beta0 = self._tuned_beta(ll_known)
            beta0 = p.class_similarity if st.beta0 is None else st.beta0
            beta = class_similarity_at(
                t, beta0, p.class_similarity_anneal_start, p.class_similarity_anneal_end
            )
            st.stats.scale_(1.0 - eta if t > 0 else 0.0)
            res = em_pass(
                self.prob,
                idx,
                self.effective_grid(),
                st.log_prior,
                self.wsig(),
                self.alpha(),
                beta=beta,
                force_hard=p.force_hard,
                stats=st.stats,
                weight=(eta if t > 0 else 1.0) * self.prob.n / len(idx),
                chunk_size=p.chunk_size,
                check=self.check,
                progress=lambda d, n: self.emit(
                    Progress(phase="oem", done=d, total=n, time_s=self.now())
                ),
                ll_known=ll_known,
            )
            self._reseed_empty(res, idx, t)
            self._m_step()
            self.times["oem"].append(time.perf_counter() - t0)
            st.iteration += 1
            self._emit_iteration("oem", t, eta, beta, res, None)
            if st.iteration == T:
                break  # the last one: the hand-over checkpoint below
            now = time.perf_counter()  # mid-O-EM checkpoints carry the 2·K-volume statistics
            if now - self._last_oem_save >= OEM_CHECKPOINT_EVERY_S:
                self.save(st)
                self._last_oem_save = now
            yield
        ran = st.iteration > 0
        st.phase, st.iteration, st.stats = "fem", 0, None
        if ran:  # F-EM needs no O-EM statistics: a small checkpoint to go on from
            self.save(st)
            yield

    def _e_step(self, idx: np.ndarray, force_hard: bool, progress: Any = None) -> Any:
        """Posteriors of particles ``idx`` under the current volumes, no statistics."""
        return em_pass(
            self.prob, idx, self.effective_grid(), self.st.log_prior, self.wsig(), self.alpha(),
            beta=0.0, force_hard=force_hard, stats=None, chunk_size=self.p.chunk_size,
            check=self.check, progress=progress,
        )  # fmt: skip

    def _tuned_beta(self, ll: np.ndarray) -> float:
        """The class similarity β₀ that gives the target class ESS for log-likelihoods ``ll``
        (a batch's, under the current volumes)."""
        return tune_class_similarity(
            ll, self.st.log_prior, self.p.target_class_ess_fraction * self.K
        )

    def _reseed_empty(self, res: Any, idx: np.ndarray, t: int) -> bool:
        """Re-seed classes whose effective size fell below ``min_class_size`` from the
        worst-fitting particles of the largest class (never let a class die silently).
        Returns True when a class was re-seeded."""
        st, p = self.st, self.p
        stats = st.stats
        if stats is None:
            return False
        empty = [k for k in range(self.K) if stats.mass[k] < p.min_class_size]
        if not empty or self.K < 2:
            return False
        from .passes import hard_pass

        for k in empty:
            big = int(np.argmax(stats.mass))
            members = np.nonzero(res.hard == big)[0]
            if members.size < 2:
                continue
            worst = members[np.argsort(res.ll[members, big])[: members.size // 2]]
            stats.reset_class_(k)
            fresh = ClassStats.zeros(self.geom, self.K, self.xp)
            hard_pass(
                self.prob,
                idx[worst],
                np.full(worst.size, k),
                fresh,
                self.wsig(),
                self.alpha(),
                p.chunk_size,
                self.check,
            )
            scale = self.prob.n / max(len(idx), 1)
            stats.acc[..., k, :] = fresh.acc[..., k, :] * np.float32(scale)
            stats.mass[k] = fresh.mass[k] * scale
            msg = (
                f"class {k} fell below {p.min_class_size:g} particles; re-seeded from "
                f"{worst.size} worst-fitting particles of class {big}"
            )
            st.log.append(msg)
            self.emit(ClassesReseeded(iteration=t, classes=(k,), message=msg, time_s=self.now()))
        return True

    def _consensus_prior(self) -> ConsensusPrior | None:
        """The prior of the class solve (built once: the consensus does not change)."""
        if not self.p.use_fsc_filter:
            return None
        if self._prior is None:
            st = self.st
            self._prior = ConsensusPrior(
                self.xp.asarray(st.consensus),
                local_sigma_px=self.p.local_shrink_A / self.prob.pixel_size_c_A,
            )
        return self._prior

    def _m_step(self) -> None:
        st = self.st
        if st.stats is None:
            raise RuntimeError("M-step without statistics")
        prior = self._consensus_prior() if self.p.shrink_to_consensus else None
        rec = self._recon(st.stats, st.tau2, st.solvent_mask, prior=prior)
        st.prev_volumes = st.volumes
        st.volumes = to_numpy(self._postprocess(rec.volumes)).astype(np.float32)
        st.fsc, st.tau2 = rec.fsc, rec.tau2
        mass = np.maximum(st.stats.mass, 1e-12)
        st.log_prior = np.log(mass / mass.sum())

    def fem_phase(self) -> Iterator[None]:
        p, st = self.p, self.st
        self.emit(PhaseStarted(phase="fem", total_iterations=p.max_fem_iters, time_s=self.now()))
        idx = np.arange(self.prob.n)
        while st.iteration < p.max_fem_iters and not st.converged:
            t0 = time.perf_counter()
            st.stats = ClassStats.zeros(self.geom, self.K, self.xp)
            res = em_pass(
                self.prob,
                idx,
                self.effective_grid(),
                st.log_prior,
                self.wsig(),
                self.alpha(),
                beta=0.0,
                force_hard=p.force_hard,
                stats=st.stats,
                chunk_size=p.chunk_size,
                check=self.check,
                progress=lambda d, n: self.emit(
                    Progress(phase="fem", done=d, total=n, time_s=self.now())
                ),
            )
            reseeded = self._reseed_empty(res, idx, st.global_iteration)
            self._m_step()
            st.stats = None
            flow = None
            pct = float("nan")
            if st.hard is not None:
                flow = flow_matrix(st.hard, res.hard, self.K)
                pct = 100.0 * float(np.mean(st.hard != res.hard))
            st.r, st.ess, st.hard = res.r, res.ess, res.hard
            self.times["fem"].append(time.perf_counter() - t0)
            rms = self._emit_iteration("fem", st.iteration, 1.0, 0.0, res, flow, pct)
            st.iteration += 1
            if reseeded:  # a re-seeded class needs iterations of its own before convergence
                pass
            elif pct < p.convergence_pct:
                st.converged, st.reason = True, f"{pct:.2f} % of particles switched class"
            elif p.rms_change_check and rms < p.rms_change_threshold:
                st.converged, st.reason = True, f"RMS density change {rms:.4f}"
            self.save(st)
            yield
        if st.r is None:  # no F-EM iteration (max_fem_iters = 0): assign with the O-EM volumes
            self._assign_all(idx)
        if not st.converged:
            st.reason = f"reached max_fem_iters = {p.max_fem_iters}"
        st.phase = "finish"

    def _assign_all(self, idx: np.ndarray) -> None:
        """Posteriors, ESS and hard classes of every particle under the current volumes (an
        E-step without statistics): what the result reports when O-EM alone ran."""
        res = self._e_step(
            idx,
            self.p.force_hard,
            lambda d, n: self.emit(Progress(phase="fem", done=d, total=n, time_s=self.now())),
        )
        self.st.r, self.st.ess, self.st.hard = res.r, res.ess, res.hard

    # ------------------------------------------------------------------ reporting
    def _rms_change(self) -> float:
        st = self.st
        if st.prev_volumes is None:
            return float("nan")
        m = st.solvent_mask[None]
        w = np.exp(st.log_prior)[:, None]
        d = ((st.volumes - st.prev_volumes) ** 2 * m).reshape(self.K, -1).mean(1)
        ref = ((st.prev_volumes**2) * m).reshape(self.K, -1).mean(1)
        return float(np.sqrt((w[:, 0] * d).sum() / max((w[:, 0] * ref).sum(), 1e-30)))

    def _eta_remaining(self, phase: str) -> float:
        """Seconds left: the iterations still to run times the median time of one so far (the
        median, not the mean: a first run's first iteration includes compiling the kernels,
        up to 2 minutes, and would inflate every estimate after it)."""
        _, nb, T = self.oem_plan()
        t_oem = float(np.median(self.times["oem"])) if self.times["oem"] else float("nan")
        t_fem = float(np.median(self.times["fem"])) if self.times["fem"] else t_oem * nb
        left_oem = max(T - self.st.iteration, 0) if phase == "oem" else 0
        left_fem = self.p.max_fem_iters - (self.st.iteration + 1 if phase == "fem" else 0)
        return float(left_oem * t_oem + max(left_fem, 0) * t_fem)

    def _emit_iteration(
        self,
        phase: str,
        it: int,
        eta: float,
        beta: float,
        res: Any,
        flow: Any,
        pct: float = float("nan"),
    ) -> float:
        st = self.st
        rms = self._rms_change()
        st.global_iteration += 1
        freq = self.prob.shell_frequencies_invA()
        from ..core.fsc import resolution_at

        res_A = np.array([resolution_at(freq, f) for f in st.fsc])
        dens = self.inputs["density_scale"]
        mass = st.stats.mass if st.stats is not None else res.r.sum(0)
        mass = np.asarray(mass) * (self.prob.n / max(float(np.sum(mass)), 1e-12))
        rec: dict[str, Any] = dict(
            phase=phase,
            iteration=it,
            global_iteration=st.global_iteration - 1,
            eta=eta,
            beta=beta,
            pct_switched=pct,
            rms_change=rms,
            mean_ess=float(res.ess.mean()),
            log_likelihood=float(res.log_evidence.mean()),
            elapsed_s=self.times[phase][-1],
            time_s=self.now(),
            **{f"mass_{k}": float(mass[k]) for k in range(self.K)},
            **{f"count_{k}": int(c) for k, c in enumerate(np.bincount(res.hard, minlength=self.K))},
            **{f"fsc_res_A_{k}": float(r) for k, r in enumerate(res_A)},
            flow=None if flow is None else np.asarray(flow).tolist(),
        )
        st.records.append(rec)
        self.emit(
            IterationFinished(
                phase=phase,
                iteration=it,
                global_iteration=rec["global_iteration"],
                eta=eta,
                beta=beta,
                class_mass=mass,
                hard_counts=np.bincount(res.hard, minlength=self.K),
                pct_switched=pct,
                rms_change=rms,
                mean_ess=rec["mean_ess"],
                log_likelihood=rec["log_likelihood"],
                fsc_res_A=res_A,
                elapsed_s=rec["elapsed_s"],
                eta_remaining_s=self._eta_remaining(phase),
                volumes=st.volumes * dens,
                consensus=st.consensus * dens,
                ess=res.ess if phase == "fem" else None,
                hard_class=res.hard if phase == "fem" else None,
                flow_matrix=flow,
                fsc=st.fsc.copy(),
                fsc_freq_invA=freq,
                time_s=self.now(),
            )
        )
        return rms

    # ------------------------------------------------------------------ generator
    def run(self) -> Iterator[None]:
        if self.st.phase == "consensus":
            self.consensus_phase()
            self.save(self.st)
            yield
        if self.st.phase == "init":
            self.init_phase()
            self.save(self.st)
            yield
        if self.st.phase == "oem":
            yield from self.oem_phase()
        if self.st.phase == "fem":
            yield from self.fem_phase()


def run_algorithm(driver: Driver) -> Iterator[None]:
    return driver.run()
