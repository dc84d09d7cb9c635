# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 1 — Quick start: simulate → classify → look → export
#
# **What you will learn**
#
# - what *3D classification without alignment* needs as input (particles whose poses and CTF are
#   already known from a consensus refinement) and what it gives back (K class volumes and, per
#   particle, a probability of belonging to each class);
# - how to make a data set with a known answer, with the built-in simulator (no download);
# - how to run a classification from the **dashboard** and watch its diagnostic plots live;
# - how to check the answer against the truth and against the *oracle* (the physical limit);
# - how to export the classes for RELION and CryoSPARC.
#
# Time: about 2 minutes on a 2-core laptop without a GPU.
#
# ## Why "without alignment"?
#
# A consensus refinement has already found each particle's orientation and shift. If the
# heterogeneity we are after is too small to improve those alignments (a ligand, a flexible
# domain, a missing subunit), searching poses again for every class only costs time and adds
# noise. CryoSPARC's *3D Classification* job (like RELION's `--skip_align`) keeps the poses
# fixed and only asks *which class does each particle belong to?* Each iteration then costs one
# central slice per particle and class, which is why the job is fast and can afford many
# classes: "this can be significantly larger than Heterogeneous Refinement for the same
# computational cost".
#
# Under the hood it alternates, like CryoSPARC, between (1) computing the most likely class
# assignments of each particle given the current class volumes and (2) updating each volume
# from those assignments — first on batches of particles (**O-EM**, online expectation
# maximisation), then on all particles at once (**F-EM**, full-batch EM) until fewer than
# 2 % of the particles switch class.

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import os
import time
from pathlib import Path

import numpy as np
import plotly.express as px
from cryoclass_widgets import Dashboard

import cryoclass
from cryoclass import ClassificationParams, sim
from cryoclass.demo import adjusted_rand_index

# Small sizes for continuous integration; leave unset on your laptop.
SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"
WORK = Path("tutorial_output") / "01_quickstart"
print("cryoclass", cryoclass.__version__, "| small mode" if SMALL else "")

# %% [markdown]
# ## 1. Simulate a data set with a known answer
#
# The simulator builds a small pseudo-atomic protein in three states:
#
# | state | what changes | kind of heterogeneity |
# |---|---|---|
# | `closed` | the reference | — |
# | `open` | a domain swings 25° about a hinge | conformational |
# | `ligand` | a small ligand (≈ 3.5 % of the mass) fills a pocket | compositional |
#
# Each particle is one state seen in a random orientation, shifted, modulated by its CTF and
# buried in noise (SNR 0.05: the signal variance is 1/20 of the noise variance, typical of real
# data). Because we know each particle's true state we can score the classification.

# %%
N = 800 if SMALL else 3000
BOX, APIX, SNR = (48, 3.0, 0.1) if SMALL else (64, 3.0, 0.05)

t0 = time.perf_counter()
ds = sim.simulate(n_particles=N, box=BOX, pixel_size_A=APIX, snr=SNR, seed=0)
print(
    f"{len(ds.particles)} particles, box {BOX} px at {APIX} Å/px, in {time.perf_counter() - t0:.1f} s"
)
print("states:", ds.state_names)
print(
    "fraction of the mass that differs from 'closed':",
    {k: round(v, 3) for k, v in ds.mass_fractions.items()},
)

# %% [markdown]
# This is what the classifier sees: one particle of each state (one noisy image each). You cannot tell the
# states apart by eye — only the average over many particles, in 3D, can.

# %%
idx = [int(np.nonzero(ds.labels == k)[0][0]) for k in range(len(ds.state_names))]
imgs = ds.particles.images.read(idx)  # (n, D, D) float32
fig = px.imshow(imgs, facet_col=0, binary_string=True, title="One simulated particle per state")
fig.for_each_annotation(lambda a: a.update(text=ds.state_names[int(a.text.split("=")[1])]))
fig.update_layout(height=280, width=700, margin=dict(l=10, r=10, t=60, b=10))
fig

# %% [markdown]
# ## 2. Classify, and look: the dashboard
#
# The one parameter that must always be set is the **filter resolution**: "Classification is
# performed at this resolution … Results are best when the resolution is just high enough to
# see the difference of interest": 3–6 Å for a ligand, 6–10 Å for a domain motion, > 10 Å for a
# whole domain or binding partner. Our states differ by a domain motion *and* a ligand, so we
# take 8 Å. The particles are Fourier-cropped to the box this resolution needs (shown in the
# form as *Classification box*), which is what makes the job fast.
#
# The number of classes K is 3 (we know the answer; tutorial 2 shows how to choose K when you
# don't).
#
# Run the next cell to show the dashboard, then press **Run**. (Or simply run the cell after it,
# which presses Run for you and waits.) While it runs, watch:
#
# - **Class assignments** — per class, the *hard count* (particles whose most likely class it
#   is) beside the *effective size* (the sum of the probabilities). When the two differ, many
#   particles are uncertain between classes.
# - **Per-particle class ESS** — the effective number of classes each particle belongs to:
#   1.0 means confidently one class. Many particles with ESS > 1 means the classes overlap.
# - **Class sizes over iterations** and **Convergence** (% of particles switching class, RMS
#   change of the volumes): the job stops when fewer than 2 % switch.
# - **Class flow** (from the second F-EM iteration): how many particles moved from class i to
#   class j between consecutive iterations.
# - **Difference from consensus** slices: where each class differs from the average of all
#   particles — where the heterogeneity is.
# - the **3D viewer** of the class volumes — side by side, left to right in class order and
#   in the class colours, or overlaid, one at a time, or as differences from the consensus
#   (green where the class has more density, red less) — and the **class table** with export
#   buttons.
#
# The very first run on a computer spends up to 2 minutes compiling the CPU kernels (the status
# line says so; later runs start at once). Workshop teachers: run `cryoclass compile` once on
# each machine beforehand.

# %%
params = ClassificationParams(n_classes=3, filter_res_A=8.0, seed=0)
dash = Dashboard(ds.particles, params=params)
dash

# %%
# Equivalent to pressing "Run" (does nothing if you already pressed it), then wait for the end.
if dash.job is None:
    dash.start()
dash.wait()
result = dash.job.result
print(f"converged: {result.converged} ({result.reason})")

# %% [markdown]
# ## 3. What came out
#
# `result` is a `ClassificationResult`. Its class table has, per class, the hard count
# (`size`), the effective size, the class's half-set FSC = 0.143 resolution and the mean ESS of
# its particles.

# %%
result.class_table().round(3)

# %% [markdown]
# Per particle: the class (0-based, as in CryoSPARC), the posterior probability of every class,
# its ESS and its per-particle scale.

# %%
result.assignments.head()

# %% [markdown]
# ### How good is it?
#
# We compare the hard classes with the true states using the **adjusted Rand index** (ARI: 1 =
# perfect, 0 = no better than chance; it does not care how the classes are numbered). We also
# compute the ARI of the **oracle**: a classifier that knows the true volumes, poses, CTF and
# noise and picks, for each particle, the most likely state at the same filter resolution. No
# method can beat it on average — at this noise level even the oracle mistakes some `closed`
# particles for `ligand` ones, because a ligand of 3.5 % of the mass is barely visible in a
# single noisy image.

# %%
ari = adjusted_rand_index(ds.labels, result.hard)
oracle = adjusted_rand_index(ds.labels, sim.oracle_labels(ds, params.filter_res_A))
print(f"ARI vs truth {ari:.3f}; oracle {oracle:.3f} → {ari / oracle:.0%} of the physical limit")

# %% [markdown]
# Which class is which state? A contingency table (rows: true states, columns: classes).

# %%
import pandas as pd  # noqa: E402

pd.crosstab(
    pd.Series(np.array(ds.state_names)[ds.labels], name="true state"),
    pd.Series(result.hard, name="class"),
)

# %% [markdown]
# ## 4. Export
#
# `result.write(outdir)` writes everything CryoSPARC's job outputs, in both worlds:
#
# - `particles.star` (RELION: `rlnClassNumber`, **1-based**, `rlnMaxValueProbDistribution` and
#   one `rlnClassPosteriorNN` column per class) and `particles.cs` (CryoSPARC:
#   `alignments3D/class`, 0-based, `alignments_class3D_{k}/class_posterior`, `class_ess`);
# - "particles for each class" `class_NN.star/.cs` and "3D volumes for each class"
#   `class_NN.mrc` (NN 0-based, as in CryoSPARC), "all volumes" as `volumes.zip`, the
#   consensus volume, the solvent and focus masks;
# - `iterations.csv`, `params.yaml` (parameters, version, command) and `diagnostics/`.
#
# The dashboard's **Export** buttons do the same (all outputs, or only the ticked classes).

# %%
files = result.write(WORK / "classify")
print(len(files), "files in", WORK / "classify")
print(sorted(p.name for p in (WORK / "classify").iterdir()))

# %% [markdown]
# Keep only some classes — say the largest one — for a follow-up refinement:
# `write_classes` writes `class_NN.star/.cs/.mrc` of those classes and `selected.star/.cs`
# with all their particles together.

# %%
largest = int(result.class_table()["size"].idxmax())
sel = result.write_classes(WORK / "selected", [largest])
print([p.name for p in sel])

# %% [markdown]
# Tutorial 6 shows how to load these files in RELION and CryoSPARC.
#
# ## Without the dashboard
#
# In a script (or on a cluster) the same job is three lines; `cryoclass classify` does it from
# the shell:
#
# ```python
# job = cryoclass.Classification(particles, params, outdir="class3d")
# result = job.run()                 # or job.start() + job.cancel() in a notebook
# print(result.class_table())
# ```
#
# ## Workshop exercise
#
# 1. Before running anything: with SNR 0.01 (five times noisier), which state will be lost
#    first, `open` or `ligand`? Why? Re-run from step 1 with `snr=0.01` and check the
#    contingency table and the oracle's ARI.
# 2. In the dashboard, set *Number of classes* to 2 and press Run again. Which two states end
#    up together? Look at the *Difference from consensus* slices to explain it.
# 3. Tick one class in the class table, export it, and open `class_NN.mrc` in ChimeraX.
