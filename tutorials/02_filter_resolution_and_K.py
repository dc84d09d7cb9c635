# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 2 — Choosing the filter resolution and the number of classes
#
# **What you will learn**
#
# - what the **filter resolution** does (it sets the classification box, hence the cost and
#   what differences can be seen) and how to choose it: too coarse hides the difference you
#   are after, too fine costs time and adds noise;
# - how to choose the **number of classes K**: too few merges states, too many splits one state
#   over several classes;
# - how to read the diagnostic plots as a diagnosis: the **per-particle class ESS histogram**,
#   the **class assignment histogram** (hard count vs effective size), the **class flow**
#   diagram and matrix, and the **difference from consensus** slices.
#
# Time: about 4 minutes on a 2-core laptop (several classifications).
#
# CryoSPARC's advice for the filter resolution: "Results are best when the resolution is just
# high enough to see the difference of interest": **3–6 Å** for presence/absence of a ligand,
# **6–10 Å** for a domain moving relative to another, **> 10 Å** for presence/absence of a
# domain or binding partner.

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import os
import time

import numpy as np
import pandas as pd
from cryoclass_widgets.figures import (
    class_histogram_figure,
    difference_slices_figure,
    ess_histogram_figure,
    flow_matrix_figure,
    sankey_figure,
)

from cryoclass import Classification, ClassificationParams, sim
from cryoclass.conventions import classification_box
from cryoclass.demo import adjusted_rand_index

SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"

# %% [markdown]
# ## The data
#
# The same three states as in tutorial 1 — `closed`, `open` (a 25° domain motion: a
# conformational change of a quarter of the mass) and `ligand` (+3.5 % of the mass: a small
# compositional change) — at 2 Å per pixel, so that we can classify at resolutions down to
# 4 Å (Nyquist).

# %%
N = 700 if SMALL else 3000
BOX, APIX = (48, 2.5) if SMALL else (64, 2.0)
ds = sim.simulate(n_particles=N, box=BOX, pixel_size_A=APIX, snr=0.1 if SMALL else 0.05, seed=1)
STATE = np.array(ds.state_names)[ds.labels]
print(f"{N} particles, box {BOX} px at {APIX} Å/px; states {ds.state_names}")

# %% [markdown]
# ## 1. What the filter resolution does: the classification box
#
# Particles are Fourier-cropped to the smallest box that holds the filter resolution:
# `box_c = even(ceil(2 · box · pixel_size / filter_res))`. Everything finer than the filter
# resolution is thrown away before the classification starts. The work per iteration grows
# with `box_c²` (one central slice of `box_c²` pixels per particle and class), so halving the
# filter resolution costs four times as much.

# %%
rows = []
for f in (30, 20, 12, 8, 6, 4):
    if f < 2 * APIX:
        continue
    bc, ac = classification_box(BOX, APIX, f)
    rows.append(
        {
            "filter_res_A": f,
            "box_c_px": bc,
            "pixel_c_A": round(ac, 2),
            "relative_cost": (bc / BOX) ** 2,
        }
    )
pd.DataFrame(rows).round(3)


# %% [markdown]
# A small helper runs one classification and scores it against the truth and against the
# oracle at the same filter resolution (the physical limit: the oracle knows the true volumes).


# %%
def classify(filter_res_A, K, **kw):
    params = ClassificationParams(n_classes=K, filter_res_A=filter_res_A, seed=0, **kw)
    job = Classification(ds.particles, params)
    t0 = time.perf_counter()
    res = job.run()
    wall = time.perf_counter() - t0
    row = {
        "filter_res_A": filter_res_A,
        "K": K,
        "box_c": job.box_c,
        "time_s": round(wall, 1),
        "ARI": adjusted_rand_index(ds.labels, res.hard),
        "oracle_ARI": adjusted_rand_index(ds.labels, sim.oracle_labels(ds, filter_res_A)),
        "mean_ESS": float(res.ess.mean()),
        "F-EM iterations": int((res.iterations["phase"] == "fem").sum()),
    }
    return res, row


def crosstab(res):
    return pd.crosstab(pd.Series(STATE, name="true state"), pd.Series(res.hard, name="class"))


# %% [markdown]
# ## 2. Too coarse, about right, too fine
#
# Three classes (we know there are three states), at three filter resolutions.

# %%
FILTERS = (20.0, 8.0) if SMALL else (20.0, 8.0, 4.0)
runs, table = {}, []
for f in FILTERS:
    runs[f], row = classify(f, 3)
    table.append(row)
pd.DataFrame(table).round(3)

# %% [markdown]
# How to read this table:
#
# - **At 20 Å** the ligand (a compact cluster of 3.5 % of the mass) is smeared over its
#   surroundings; even the oracle separates `closed` from `ligand` worse. The domain motion is
#   still obvious. The classes are cheap but they answer a coarser question.
# - **At 8 Å** both differences are visible, and the job is still small.
# - **Finer (4 Å, in the full-size run)** costs five times more per iteration than 8 Å, and
#   the result is *worse*, although the oracle is as good as at 8 Å: with a few thousand noisy
#   particles per class the extra shells carry more noise than class signal, and `closed` and
#   `ligand` are mixed again. On real data, fine resolutions also bring in whatever the
#   consensus alignment did not get right, and classes can separate on that instead.
#
# The contingency tables show *which* states were confused:

# %%
for f in FILTERS:
    print(f"filter resolution {f} Å")
    print(crosstab(runs[f]), "\n")

# %% [markdown]
# ## 3. The number of classes
#
# Now at 8 Å with K = 2 (too few) and K = 6 (too many). 3D classification without alignment is
# cheap per class, so over-splitting is the usual strategy: ask for more classes than you
# expect and merge them afterwards (tutorial 5). But you should recognise it in the
# diagnostics.

# %%
res3 = runs[8.0]
res2, row2 = classify(8.0, 2)
res6, row6 = classify(8.0, 6)
pd.DataFrame([row2, table[FILTERS.index(8.0)], row6]).round(3)

# %%
print("K = 2\n", crosstab(res2), "\n\nK = 6\n", crosstab(res6))

# %% [markdown]
# With K = 2, two states share a class (usually `closed` and `ligand`, which differ least). With
# K = 6, each true state is spread over two or more classes.
#
# ## 4. Reading the diagnostics
#
# ### Per-particle class ESS histogram
#
# "The ESS (Effective Sample Size) is a measure of how many classes each particle appears to
# belong to with significant probability. An ESS of 1.0 indicates that a particle is completely
# confidently assigned to only one class." When many particles have ESS > 1 "there is
# significant uncertainty in classification, and the classes may be overlapping or similar."

# %%
ess_histogram_figure(res3.ess, 3)

# %%
ess_histogram_figure(res6.ess, 6)

# %% [markdown]
# Compare the two: with K = 6 more particles sit between 1 and 2 — they hesitate between
# classes that show the same state. A hump near 2 is the tell-tale of too many classes (or of
# a filter resolution too coarse to tell the classes apart); run the 20 Å job above through
# `ess_histogram_figure` to see the second case.
#
# ### Class assignment histogram: hard count vs effective size
#
# The hard count is the number of particles whose most likely class it is; the effective size
# is the sum of the probabilities. "When the assignments and effective size bars are
# differently sized, this indicates that there is uncertainty in the classification."

# %%
t6 = res6.class_table()
class_histogram_figure(t6["size"].to_numpy(), t6["effective_size"].to_numpy())

# %% [markdown]
# ### Class flow
#
# The class flow diagram "shows how many particles switched classes across F-EM iterations";
# the matrix shows the same as a grid — rows: the class at the previous iteration, columns: the
# class now. Converged, well separated classes give a diagonal matrix. Off-diagonal blocks that
# persist until the last iteration mark classes trading particles — classes that are really one
# state. (The flow starts at the second F-EM iteration; a job that converges after one F-EM
# iteration has no flow to show.)

# %%
flow6 = res6.class_flow()
if flow6:
    it, m = flow6[0]
    print(f"F-EM iteration {it}: {m.sum() - np.trace(m)} of {m.sum()} particles switched class")
    fig = sankey_figure(m, iteration=it)
else:
    fig = None
    print("converged after the first F-EM iteration: no class flow")
fig

# %%
flow_matrix_figure(flow6[0][1], iteration=flow6[0][0]) if flow6 else None

# %% [markdown]
# ### Difference from consensus
#
# "The real-space difference between the consensus map and each class map … can quickly show
# areas of heterogeneity." With K = 3 at 8 Å one class shows the moved domain (a positive and
# a negative lobe), one the ligand (a small positive blob), and one hardly differs from the
# consensus.

# %%
difference_slices_figure(res3.volumes, res3.consensus, focus_mask=res3.focus_mask)

# %% [markdown]
# ## Summary: a diagnosis table
#
# | what you see | likely cause | try |
# |---|---|---|
# | ESS mostly ≈ 1, diagonal flow, distinct difference maps | good classification | — |
# | ESS humps at 2, 3 …; classes with near-identical difference maps; persistent off-diagonal flow | too many classes | merge (regroup, tutorial 5), or lower K |
# | a class's difference map shows two different features; contingency would mix states | too few classes | raise K |
# | ESS high everywhere, difference maps blurred | filter resolution too coarse for the difference | finer filter resolution |
# | slow, classes differ by noise-like speckle | filter resolution too fine | coarser filter resolution |
#
# ## Workshop exercise
#
# 1. Predict, then measure: at **30 Å**, which states does the oracle still separate? Add 30 to
#    `FILTERS` and run section 2 again.
# 2. Run K = 4 at 8 Å. Which state is split in two? Does the ESS histogram tell you so without
#    the truth?
# 3. Give the same K = 6 run `force_hard=True` ("Force hard classification"). How do the ESS
#    histogram and the assignment histogram change, and why is that not a better result?
