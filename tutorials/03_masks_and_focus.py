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
# # Tutorial 3 — Masks: focused classification and the solvent mask
#
# **What you will learn**
#
# - the two masks of 3D classification and what each is for: the **solvent mask** (where the
#   molecule is; noise outside it is ignored) and the **focus mask** (the region whose
#   differences should drive the classification);
# - how a focus mask turns "what is the biggest difference in my data?" into "is the ligand
#   there or not?";
# - what the automatic solvent mask is, and when to give your own.
#
# Time: about 3 minutes on a 2-core laptop.
#
# In CryoSPARC's words: the solvent mask is optional — "if not supplied, a solvent mask is
# computed by dilating and soft-padding the consensus volume"; the focus mask too — "if not
# supplied, only the solvent mask will be used (i.e., the focus mask will be set to a volume of
# all ones)". In cryoclass, outside the focus mask every class is held equal to the consensus,
# so density there contributes the same to every class and cancels out of the class
# probabilities: no signal subtraction of the particles is needed.

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import os

import numpy as np
import pandas as pd
import plotly.express as px

from cryoclass import Classification, ClassificationParams, sim
from cryoclass.core.masks import auto_solvent_mask, spherical_mask
from cryoclass.demo import adjusted_rand_index

SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"

# %% [markdown]
# ## The question
#
# Our protein comes in three states: `closed`, `ligand` (a ligand of 3.5 % of the mass bound
# in a pocket) and `missing` (a peripheral subunit of 5 % of the mass is gone). We want to know
# **which particles have the ligand** — the missing subunit is a distraction.
#
# A small ligand asks for a fine filter resolution (CryoSPARC: "3–6 Å for small changes in
# density (presence/absence of ligand)"); we use 6 Å.

# %%
N = 600 if SMALL else 3000
BOX, APIX = (48, 2.5) if SMALL else (64, 2.0)
FILTER = 6.0
ds = sim.simulate(
    n_particles=N,
    box=BOX,
    pixel_size_A=APIX,
    snr=0.1,
    states=("closed", "ligand", "missing"),
    seed=2,
)
STATE = np.array(ds.state_names)[ds.labels]
HAS_LIGAND = (STATE == "ligand").astype(int)
print({k: round(v, 3) for k, v in ds.mass_fractions.items()})


# %%
def score(res, name):
    """ARI for the question asked (ligand or not) and the contingency table."""
    print(f"{name}: ARI(ligand yes/no) = {adjusted_rand_index(HAS_LIGAND, res.hard):.3f}")
    return pd.crosstab(pd.Series(STATE, name="true state"), pd.Series(res.hard, name="class"))


# %% [markdown]
# ## 1. Without a focus mask
#
# Two classes, the whole molecule. The job is free to split the particles along *whatever*
# difference is largest.

# %%
params = ClassificationParams(n_classes=2, filter_res_A=FILTER, seed=0)
res_global = Classification(ds.particles, params).run()
score(res_global, "no focus mask")

# %% [markdown]
# Usually the split follows the missing subunit (the larger change), or mixes both: the
# classification answers a question, just not ours.
#
# ## 2. A focus mask around the ligand pocket
#
# In practice you make a focus mask from a model or a map: in ChimeraX (`volume zone`, `molmap`
# of the ligand), RELION's `relion_mask_create`, or CryoSPARC's *Volume Tools*: a region a few
# Å larger than the ligand, with a soft edge. Here the simulator's true maps stand in for a
# model: the `ligand` map minus the `closed` map is the ligand; we threshold it, dilate it by
# 4 Å and add a 6 Å soft edge (`cryoclass.core.masks.auto_solvent_mask` does exactly
# threshold → dilate → soft edge, so it serves for any mask).
#
# Masks are given at the particles' box and pixel size, as a `.mrc` path or as an
# `(array, pixel_size_A)` pair; the job resamples them to the classification box.

# %%
closed, ligand = (
    ds.volumes[ds.state_names.index("closed")],
    ds.volumes[ds.state_names.index("ligand")],
)
focus = auto_solvent_mask(
    ligand - closed, APIX, threshold=0.2, lowpass_A=None, dilate_A=4.0, soft_edge_A=6.0
)
print(f"focus mask: {float((focus > 0.5).mean()):.2%} of the box")

z = int(np.argmax(focus.sum(axis=(1, 2))))  # the z plane through the pocket
fig = px.imshow(
    np.stack([closed[z], ligand[z], focus[z]]),
    facet_col=0,
    color_continuous_scale="gray",
    title=f"plane z = {z}: closed, ligand, focus mask",
)
fig.update_layout(height=300, width=760, coloraxis_showscale=False)
fig

# %%
res_focus = Classification(ds.particles, params, focus_mask=(focus, APIX)).run()
score(res_focus, "focused on the pocket")

# %% [markdown]
# Now one class is the ligand class and the other holds `closed` and `missing` together: inside
# the mask they are the same. The missing subunit no longer matters.
#
# How close is that to the best possible? The oracle (true maps, poses, CTF and noise) at the
# same filter resolution, asked the same question:

# %%
oracle = sim.oracle_labels(ds, FILTER)
oracle_ligand = (np.array(ds.state_names)[oracle] == "ligand").astype(int)
print(f"oracle: ARI(ligand yes/no) = {adjusted_rand_index(HAS_LIGAND, oracle_ligand):.3f}")
print(f"mean per-particle class ESS of the focused run: {res_focus.ess.mean():.2f} (of 2)")

# %% [markdown]
# Even the oracle gets a fraction of the particles wrong: a ligand of 3.5 % of the mass is a
# faint signal in one noisy image. The per-particle **class ESS** tells you how sure the job is
# without any ground truth: near 1, most particles clearly belong to one class (the full-size
# run); near 2, most are nearly as likely to be in either class (the small run used in CI,
# with few particles). Even then the *classes* can be right — averaged over hundreds of
# particles the ligand density is clear — but treat single-particle assignments of a small
# feature as probabilities, not facts.
# (`force_hard=True` does not make them more certain; it only stops showing the doubt.)
#
# The difference-from-consensus slices are shown *inside the focus mask* (that is all the
# classes are allowed to differ in):

# %%
d = res_focus.diff_slices()  # (K, 3 planes, box_c, box_c) of (V_k − V_cons) · M_f
px.imshow(
    d[:, 0],
    facet_col=0,
    color_continuous_scale="RdBu_r",
    color_continuous_midpoint=0.0,
    title="class − consensus (xy), focused",
)

# %% [markdown]
# ## 3. The solvent mask: automatic or given
#
# The solvent mask says where the molecule can be. Everything outside it is noise, and
# classifying on noise makes classes wander. The automatic one is built, as CryoSPARC does,
# from the consensus: low-pass it, threshold at 0.2 × its maximum (`mask_threshold`), set 1
# within 10 Å of that (`mask_dilate_A`) and fall off with a cosine over another 10 Å
# (`mask_soft_edge_A`). The result holds it at the classification box:

# %%
c = res_focus.box_c // 2
px.imshow(
    np.stack([res_focus.consensus[c], res_focus.solvent_mask[c]]),
    facet_col=0,
    color_continuous_scale="gray",
    title="consensus and automatic solvent mask (central plane)",
).update_layout(height=300, width=560, coloraxis_showscale=False)

# %% [markdown]
# Give your own when the automatic one is wrong for your sample: a detergent micelle or
# nanodisc you do not want to classify on, a flexible part that the consensus shows too weakly
# to be included at 0.2 × max, or a soft mask you already made for refinement. Here we compare
# with a loose spherical mask (what you get if you forget: lots of solvent noise inside) and
# with one that is too tight (it cuts into the protein).

# %%
rows = []
for name, solvent in (
    ("automatic", None),
    ("loose sphere", (spherical_mask(BOX, 0.45 * BOX, soft_px=3), APIX)),
    ("too tight sphere", (spherical_mask(BOX, 0.15 * BOX, soft_px=2), APIX)),
):
    r = (
        res_focus
        if solvent is None
        else Classification(
            ds.particles, params, focus_mask=(focus, APIX), solvent_mask=solvent
        ).run()
    )
    rows.append(
        {
            "solvent mask": name,
            "ARI(ligand)": adjusted_rand_index(HAS_LIGAND, r.hard),
            "mean ESS": float(r.ess.mean()),
            "class FSC=0.143 (Å)": np.round(r.fsc_resolution_A(), 1),
        }
    )
pd.DataFrame(rows).round(3)

# %% [markdown]
# Note the last column: a mask that cuts into the protein also correlates the two half-maps
# through its own sharp edge, so the class FSC looks *better* while the classification gets
# worse — never judge a mask by the FSC it gives.
#
# The focus mask does most of the work here, so the solvent mask changes less; on real data a
# mask that includes a micelle, or cuts away density, can change the answer. A good solvent
# mask is soft (no sharp edge: sharp edges ring in Fourier space), contains all the protein and
# not much more.
#
# ## Workshop exercise
#
# 1. Make a focus mask around the **subunit** instead (`missing` vs `closed`: which sign does
#    the difference map have?) and classify with K = 2. Which states end up together now?
# 2. Shrink the focus mask's dilation to 0 Å and the soft edge to 1 Å. Does the classification
#    get better or worse? Why might a sharp mask hurt?
# 3. Classify the ligand question at 12 Å with the focus mask. Compare with CryoSPARC's
#    advice for ligands.
