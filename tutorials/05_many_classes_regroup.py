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
# # Tutorial 5 — Many classes, superclasses, re-classification, full-box maps
#
# **What you will learn**
#
# - why you can ask 3D classification without alignment for *many* classes, and how to read
#   the class flow **matrix** when the Sankey diagram gets crowded;
# - how to **regroup** many classes into a few superclasses by real-space voxel correlation;
# - how to **re-classify a subset** of classes to sort out a smaller difference;
# - how to reconstruct the final classes at the **full box** (CryoSPARC's *Heterogeneous
#   Reconstruction Only*).
#
# Time: about 4 minutes on a 2-core laptop.
#
# These are CryoSPARC's "common next steps" after 3D classification: the number of classes
# "can be significantly larger than Heterogeneous Refinement for the same computational
# cost"; "for large sets of classes (e.g., 50+), this job can quickly group these classes into
# a smaller set of 'superclasses' based on real-space voxel correlations"; "further
# classification of subsets of classes"; and Heterogeneous Reconstruction Only "to reconstruct
# classes at a larger box size than the one set by the 3D classification target resolution".

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from cryoclass_widgets.figures import flow_matrix_figure

from cryoclass import Classification, ClassificationParams, sim
from cryoclass.demo import adjusted_rand_index
from cryoclass.followup import class_correlation, reclassify, reconstruct_classes, regroup

SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"
WORK = Path("tutorial_output") / "05_many_classes"

# %% [markdown]
# ## 1. Over-split on purpose
#
# Three states again (`closed`, `open`: a domain motion, `ligand`: +3.5 % mass), and many more
# classes than states.

# %%
N = 900 if SMALL else 4000
BOX, APIX = (40, 3.0) if SMALL else (64, 2.0)
K = 8 if SMALL else 20
ds = sim.simulate(n_particles=N, box=BOX, pixel_size_A=APIX, snr=0.1 if SMALL else 0.05, seed=4)
STATE = pd.Series(np.array(ds.state_names)[ds.labels], name="true state")

params = ClassificationParams(n_classes=K, filter_res_A=9.0, seed=0)
result = Classification(ds.particles, params, outdir=WORK / "classify", overwrite=True).run()
result.class_table().round(2)

# %% [markdown]
# Each state is now spread over several classes: look at the contingency table.

# %%
pd.crosstab(STATE, pd.Series(result.hard, name="class"))

# %% [markdown]
# With this many classes the class flow is easier to read as a matrix: "each column
# represents … the particles in a given class at the current F-EM iteration. Each row
# represents the class which the particles belonged to at the previous iteration." Classes
# that show the same state keep trading particles: off-diagonal blocks.

# %%
flow = result.class_flow()
flow_matrix_figure(
    flow[-1][1], iteration=flow[-1][0]
) if flow else "converged after one F-EM iteration"

# %% [markdown]
# ## 2. Regroup into superclasses
#
# `regroup` correlates every pair of class volumes, voxel by voxel, inside the solvent mask
# (after low-passing them to the resolution that all of them reach), clusters the classes
# hierarchically and cuts the tree into the number of superclasses you ask for. Tiny classes
# can be left out (`min_class_size`) or excluded by hand (`exclude=[...]`).

# %%
rg = regroup(result, 3, min_class_size=10)
rg.class_table()

# %%
corr = rg.correlation
px.imshow(
    corr,
    color_continuous_scale="Viridis",
    title="class–class voxel correlation",
    labels=dict(x="class", y="class"),
).update_layout(width=450, height=420)

# %% [markdown]
# The dendrogram behind it (scipy's linkage; leaves are classes):

# %%
dg = rg.dendrogram
fig = go.Figure()
for xs, ys in zip(dg["icoord"], dg["dcoord"]):
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#444"), showlegend=False))
fig.update_layout(
    title="class dendrogram (distance = 1 − correlation)",
    xaxis=dict(
        tickvals=[5 + 10 * i for i in range(len(dg["ivl"]))],
        ticktext=[str(c) for c in dg["ivl"]],
        title="class",
    ),
    yaxis_title="1 − correlation",
    width=600,
    height=350,
)
fig

# %% [markdown]
# How well do the superclasses match the states?

# %%
print(f"superclasses vs truth: ARI {adjusted_rand_index(ds.labels, rg.labels):.3f}")
pd.crosstab(STATE, pd.Series(rg.labels, name="superclass"))

# %% [markdown]
# `rg.write(outdir)` writes `superclass_NN.mrc`, `superclass_NN.star/.cs` and the tables; the
# star files carry the superclass in a column `cryoclassSuperclass`.

# %%
files = rg.write(WORK / "regroup")
sorted(p.name for p in files)[:10]

# %% [markdown]
# ## 3. Re-classify a subset
#
# The domain motion is a large difference; the ligand a small one. The superclass that is least
# like the others is the `open` one. We take the classes of the *other* superclasses and
# classify only their particles again, with K = 2 and a finer filter resolution — now the
# ligand is the largest difference left.
#
# (Without a ground truth, you would choose by looking at the superclass maps and their
# difference from the consensus; here we pick the most distinct superclass automatically.)

# %%
S = rg.n_superclasses
sc_corr = class_correlation(rg.volumes, rg.mask)
distinct = int(np.argmin((sc_corr.sum(1) - 1) / max(S - 1, 1)))
keep = [
    int(k)
    for k in np.nonzero((rg.superclass_of_class != distinct) & (rg.superclass_of_class >= 0))[0]
]
print(f"most distinct superclass: {distinct}; re-classifying classes {keep}")

job = reclassify(
    result, keep, n_classes=2, filter_res_A=7.0, outdir=WORK / "reclassify", overwrite=True
)
sub = job.run()
print(f"{len(sub.hard)} particles re-classified; provenance: {job.provenance['classes']}")

# %%
sub_idx = np.nonzero(np.isin(result.hard, keep))[0]  # the subset, in the parent's order
sub_state = STATE.iloc[sub_idx].reset_index(drop=True)
pd.crosstab(sub_state, pd.Series(sub.hard, name="class"))

# %% [markdown]
# ## 4. Heterogeneous reconstruction at the full box
#
# The classes were computed at the classification box (9 Å → a small box). For model building
# or a closer look we reconstruct each final group from its particles at the extracted box and
# pixel size, with half-maps and an FSC per class. Final groups: the distinct superclass, and
# the two classes of the re-classification.

# %%
final = np.full(len(ds.labels), -1)
final[rg.labels == distinct] = 0
final[sub_idx] = 1 + sub.hard
hr = reconstruct_classes(ds.particles, final)
print(f"maps: {hr.volumes.shape} at {hr.pixel_size_A} Å/px")
hr.summary().round(2)

# %% [markdown]
# Masked correlation of each full-box map with each true state map (the simulator's truth):

# %%
m = hr.mask > 0.5


def ccc(a, b):
    a, b = a[m] - a[m].mean(), b[m] - b[m].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


pd.DataFrame(
    [
        [ccc(hr.volumes[k], ds.volumes[s]) for s in range(len(ds.state_names))]
        for k in range(hr.n_classes)
    ],
    columns=list(ds.state_names),
).rename_axis("final class").round(3)

# %%
c = BOX // 2
px.imshow(
    hr.volumes[:, c],
    facet_col=0,
    color_continuous_scale="gray",
    title="final classes at the full box (central xy plane)",
).update_layout(height=300, coloraxis_showscale=False)

# %%
files = hr.write(WORK / "hetero")
sorted(p.name for p in files)

# %% [markdown]
# From the command line the same steps are `cryoclass regroup`, `cryoclass reclassify` and
# `cryoclass reconstruct` (see `cryoclass <command> --help`).
#
# ## Workshop exercise
#
# 1. Regroup into 2 and into 4 superclasses. Which classes join first in the dendrogram, and
#    does that match the states?
# 2. Re-classify with K = 3 instead of 2. What does the third class hold? Look at its ESS.
# 3. Reconstruct the `open` superclass alone at the full box (`final == 0`) and compare its
#    FSC resolution with the 9 Å the classification ran at. Why can it be better?
