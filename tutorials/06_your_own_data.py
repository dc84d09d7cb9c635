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
# # Tutorial 6 — Your own data: RELION and CryoSPARC in, results back out
#
# **What you will learn**
#
# - which particle files to take from a RELION or CryoSPARC project (the output of the
#   consensus refinement), and which columns cryoclass needs;
# - how to read them (`cryoclass.read_particles`), including CryoSPARC passthrough files and
#   image paths relative to a project directory;
# - what the output files contain and how to pick them up again: `rlnClassNumber` and
#   `class_NN.star` in RELION, `particles.cs` fields and importing into CryoSPARC.
#
# Time: about 1 minute on a 2-core laptop. The "project" here is written by the simulator, so
# the notebook runs anywhere; replace the paths with yours.
#
# 3D classification without alignment needs **"Particles (with alignments3D)"**: every
# particle's pose, shift and CTF must already be known — take the particles of your best
# consensus refinement (RELION *Refine3D* `run_data.star`; CryoSPARC *Homogeneous*, *Non-uniform*
# or *Local Refinement* particles).

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryoclass import Classification, ClassificationParams, read_particles, sim

SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"
WORK = Path("tutorial_output") / "06_your_own_data"

# %% [markdown]
# ## 1. A project on disk
#
# `ds.write()` writes what a refinement job would hand over: `particles.mrcs` (the image stack),
# `particles.star` (RELION 3.1+: an optics table and a particles table) and `particles.cs`
# (CryoSPARC), plus the truth (`truth_labels.csv`, `truth_class_NN.mrc`), which a real project
# does not have.

# %%
N = 600 if SMALL else 3000
ds = sim.simulate(n_particles=N, box=40 if SMALL else 64, pixel_size_A=3.0, snr=0.1, seed=6)
project = WORK / "project"
written = ds.write(project)
sorted(p.name for p in written.values())

# %% [markdown]
# ## 2. RELION `.star` in
#
# The columns that matter — each particle's image, pose, shift and CTF:
#
# | what | RELION column | CryoSPARC field |
# |---|---|---|
# | image | `rlnImageName` (`000012@Extract/job007/…mrcs`) | `blob/path`, `blob/idx` |
# | pose | `rlnAngleRot`, `rlnAngleTilt`, `rlnAnglePsi` (ZYZ, degrees) | `alignments3D/pose` (axis-angle, radians) |
# | shift | `rlnOriginXAngst`, `rlnOriginYAngst` (Å) | `alignments3D/shift` (pixels) |
# | CTF | `rlnDefocusU/V`, `rlnDefocusAngle`, optics: `rlnVoltage`, `rlnSphericalAberration`, `rlnAmplitudeContrast` | `ctf/df1_A`, `ctf/df2_A`, `ctf/df_angle_rad`, `ctf/accel_kv`, `ctf/cs_mm`, `ctf/amp_contrast` |
# | pixel size | optics: `rlnImagePixelSize` | `blob/psize_A` |
# | half-set | `rlnRandomSubset` (1/2) | `alignments3D/split` (0/1) |
# | per-particle scale | `rlnCtfScalefactor` (optional) | `alignments3D/alpha` (optional) |
#
# In a RELION project, image names are relative to the **project directory** (where you
# started RELION), not to the star file: give it as `project_dir` when the star file is
# elsewhere.

# %%
star = starfile.read(project / "particles.star")
star["particles"].iloc[:3, :9]

# %%
particles = read_particles(project / "particles.star", project_dir=str(project))
print(particles)
print(f"box {particles.box} px, {particles.pixel_size_A} Å/px")

# %% [markdown]
# With a real project this would be, for example:
#
# ```python
# particles = read_particles("Refine3D/job025/run_data.star", project_dir="/data/relion/myproject")
# ```
#
# Before classifying, look at the set as a whole: particle count, Nyquist, defocus range,
# half-sets, how evenly the views cover the sphere (a strongly preferred orientation makes
# some classes' maps poorly sampled) and the classification box each filter resolution gives.
# On the command line: `cryoclass info Refine3D/job025/run_data.star`.

# %%
from cryoclass.io.summary import format_summary, particle_summary

print(format_summary(particle_summary(particles)))

# %% [markdown]
#
# ## 3. CryoSPARC `.cs` in
#
# A CryoSPARC refinement job directory holds `J42_00X_particles.cs` (its own results:
# `alignments3D`, `ctf` …) and `J42_passthrough_particles.cs` (fields it passed through from
# earlier jobs, such as `blob` from extraction). Give both: the passthrough is merged by
# `uid`. `blob/path` is relative to the **CryoSPARC project directory** (`P3/`), the default
# being the `.cs` file's directory and its parents. (From the CryoSPARC interface, *Export*
# the job's particles, or find them under the job directory.)
#
# ```python
# particles = read_particles(
#     "/data/cryosparc/P3/J42/J42_008_particles.cs",
#     passthrough="/data/cryosparc/P3/J42/J42_passthrough_particles.cs",
#     project_dir="/data/cryosparc/P3",
# )
# ```
#
# The simulated `.cs` holds every field in one file:

# %%
cs_particles = read_particles(project / "particles.cs")
print(cs_particles)
same_pose = np.allclose(cs_particles.rotations, particles.rotations, atol=1e-5)
print("same poses from .star and .cs:", same_pose)

# %% [markdown]
# ## 4. Classify, and write the results
#
# With `outdir`, the job writes checkpoints while it runs (`resume=True` continues a killed
# run) and all outputs at the end. From the shell, the same:
#
# ```bash
# cryoclass classify Refine3D/job025/run_data.star -K 3 --filter-res 8 -o class3d
# cryoclass classify J42_008_particles.cs --passthrough J42_passthrough_particles.cs \
#     --project-dir /data/cryosparc/P3 -K 3 --filter-res 8 -o class3d
# cryoclass classify run_data.star -K 3 --filter-res 8 -o c2 --set init_res_A=15  # any parameter
# cryoclass classify run_data.star -o c3 --params class3d/params.yaml --seed 1   # a run, again
# ```
#
# `cryoclass classify --help` lists every parameter by its API name. In the dashboard,
# *parameters from* fills the form from a run's `params.yaml` the same way.

# %%
out = WORK / "class3d"
params = ClassificationParams(n_classes=3, filter_res_A=9.0, seed=0)
job = Classification(particles, params, outdir=out, overwrite=True, command="tutorial 06")
result = job.run()
result.class_table().round(2)

# %%
sorted(p.name for p in out.iterdir())

# %% [markdown]
# ## 5. Back to RELION
#
# `particles.star` is the input star file plus:
#
# - `rlnClassNumber` — the class, **1-based** as RELION counts (class 1 … K);
# - `rlnMaxValueProbDistribution` — the probability of that class;
# - `rlnClassPosterior01` … — the probability of every class (extra columns; RELION ignores
#   what it does not know).
#
# `class_NN.star` holds the particles of one class, with **NN 0-based** as in CryoSPARC: so
# `class_00.star` has `rlnClassNumber` 1. The class volumes `class_NN.mrc` are at the
# classification box and pixel size (see `params.yaml`).

# %%
out_star = starfile.read(out / "particles.star")["particles"]
print(out_star["rlnClassNumber"].value_counts().sort_index())
c0 = starfile.read(out / "class_00.star")["particles"]
print(
    "class_00.star:",
    len(c0),
    "particles, rlnClassNumber",
    sorted(c0["rlnClassNumber"].unique().tolist()),
)

# %% [markdown]
# Typical next steps in RELION:
#
# ```bash
# # refine one class (its star file keeps poses, CTF and optics groups)
# relion_refine --i class3d/class_01.star --ref class3d/class_01.mrc --ini_high 15 ...
# # or select a class from the full file by its 1-based number
# relion_star_handler --i class3d/particles.star --o class2.star \
#     --select rlnClassNumber --minval 2 --maxval 2
# ```
#
# RELION's own class selection opens the run too: `run_model.star` lists the class maps with
# their class distribution and resolution under RELION's labels, and `run_data.star` (a link to
# `particles.star`) holds the particles, so the *Subset selection* job, or
# `relion_display --gui --class --i class3d/run_model.star`, shows the classes to pick by
# clicking, as for a RELION Class3D run. Map paths in it are relative to the directory you ran
# `cryoclass classify` from (RELION's project directory).
#
# To refine only the particles assigned with confidence, select them by their posterior: a
# particle is kept when its most likely class is one of those chosen and its posterior summed
# over them reaches the threshold (on the command line: `cryoclass select class3d --classes 1
# --min-probability 0.9 -o class3d_sel`). `selected.star` / `.cs` keep every column.

# %%
from cryoclass.followup import select_particles

sel = select_particles(out, [1], min_probability=0.9)
sel.write(WORK / "class3d_sel")
sel.table()

# %% [markdown]
# The class volume is small (classification box); to use it as a reference at the full box,
# either reconstruct the class at the full box (`cryoclass reconstruct`, tutorial 5) or rescale
# it: `relion_image_handler --i class_01.mrc --o ref.mrc --rescale_angpix 3.0 --new_box 64`.
#
# ## 6. Back to CryoSPARC
#
# `particles.cs` keeps every input field (and the `uid` of every particle) and adds:
#
# - `alignments3D/class` — the class, **0-based**;
# - `alignments3D/class_ess` — the per-particle class ESS;
# - `alignments3D/alpha` — the per-particle scale;
# - `alignments_class3D_{k}/class_posterior` — the probability of class k.
#
# A `.cs` file is a NumPy structured array: `np.load` reads it.

# %%
cs = np.load(out / "particles.cs")
print([f for f in cs.dtype.names if "class" in f or f == "uid"])
pd.Series(cs["alignments3D/class"]).value_counts().sort_index()

# %% [markdown]
# To bring classes into a CryoSPARC project, use
# [cryosparc-tools](https://tools.cryosparc.com) (matches particles by `uid`, so everything
# CryoSPARC knew about them — and the job graph — is kept):
#
# ```python
# from cryosparc.dataset import Dataset
# from cryosparc.tools import CryoSPARC
#
# cs = CryoSPARC(host="localhost", base_port=39000, email="you@lab.org", password="...")
# project = cs.find_project("P3")
# refined = project.find_job("J42").load_output("particles")      # the refinement you used
# mine = Dataset.load("class3d/class_01.cs")                       # one class from cryoclass
# subset = refined.query({"uid": mine["uid"]})
# project.save_external_result(
#     "W1", subset, type="particle", name="class_01",
#     passthrough=("J42", "particles"), title="cryoclass class 1",
# )
# ```
#
# Without cryosparc-tools: an *Import Particle Stack* job reading `class_NN.star` (metadata)
# and the `.mrcs` stack imports poses and CTF from the star file (CryoSPARC assigns new `uid`s).
# Volumes (`class_NN.mrc`, `volumes.zip`) come in with *Import 3D Volumes*.
#
# ## Workshop exercise
#
# 1. Open `class3d/params.yaml`. Which classification box and pixel size were used, and why?
# 2. Read `class3d/class_01.cs` with `read_particles` and classify it again with K = 2 (that is
#    what `cryoclass reclassify` does, with the provenance recorded).
# 3. If you have a RELION project: run `cryoclass classify` on a `run_data.star` of your own
#    with `--filter-res` chosen from the size of the difference you expect.
