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
# # Tutorial 7 — Going big: time, memory, a GPU and a Dask cluster
#
# **What you will learn**
#
# - where the time of a classification goes, and how to predict it for your data set from a
#   small run;
# - how much memory the preprocessed particles take, and what `chunk_size` bounds;
# - how to run on an NVIDIA GPU (`device="gpu"`, the CuPy extra);
# - how the work is spread over a Dask cluster, and how to start one.
#
# Time: about 1 minute on a 2-core laptop (the GPU and cluster parts run only where a GPU or
# Dask is available).
#
# Why 3D classification without alignment scales: poses are fixed, so each iteration costs one
# central slice per particle and class — no pose search. For N particles, K classes and a
# classification box `box_c`, an iteration is about `N × K × 0.39·box_c²` interpolations (the
# half-plane disc of Fourier pixels up to the filter resolution). The number of classes "can be
# significantly larger than Heterogeneous Refinement for the same computational cost".

# %%
# ruff: noqa: E501, B018 - notebook style: long table lines, expressions displayed
import inspect
import os
import time

import numpy as np
import pandas as pd

import cryoclass
from cryoclass import Classification, ClassificationParams, sim
from cryoclass.backend import cupy_available
from cryoclass.conventions import classification_box
from cryoclass.demo import adjusted_rand_index
from cryoclass.params import param_info

SMALL = os.environ.get("CRYOCLASS_TUTORIAL_SMALL") == "1"
# The Dask demo starts a local cluster of 2 worker processes; opt in with CRYOCLASS_TUTORIAL_DASK=1
RUN_DASK = os.environ.get("CRYOCLASS_TUTORIAL_DASK") == "1"
print(
    f"cryoclass {cryoclass.__version__}; {os.cpu_count()} CPU cores; GPU usable: {cupy_available()}"
)

# %% [markdown]
# ## 1. Measure, then extrapolate
#
# Run a small job and read the per-iteration times from `result.iterations`. The F-EM
# iterations go over all particles, so they give the throughput in **particle·class
# evaluations per second**.

# %%
N = 500 if SMALL else 3000
BOX, APIX, K, FILTER = (40, 3.0, 3, 9.0) if SMALL else (64, 3.0, 3, 8.0)
ds = sim.simulate(n_particles=N, box=BOX, pixel_size_A=APIX, snr=0.1, seed=7)
params = ClassificationParams(n_classes=K, filter_res_A=FILTER, seed=0)

t0 = time.perf_counter()
job = Classification(ds.particles, params)
result = job.run()
wall = time.perf_counter() - t0
it = result.iterations
fem = it[it["phase"] == "fem"]
t_fem = float(fem["elapsed_s"].median())
rate = N * K / t_fem
print(
    f"total {wall:.1f} s (incl. compilation on first use); {len(fem)} F-EM iterations of {t_fem:.2f} s"
)
print(f"throughput ≈ {rate:,.0f} particle·class evaluations per second at box_c = {job.box_c}")
it[["phase", "iteration", "elapsed_s", "pct_switched", "mean_ess"]].tail(4)

# %% [markdown]
# The cost per evaluation grows with the number of disc pixels, `≈ 0.39 · box_c²`. So for a
# real data set — say 300 000 particles in a 320 px box at 0.83 Å/px, K = 20, at 6 Å — one
# F-EM iteration on this machine would take about:


# %%
def duration(s):
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def fem_iteration_s(n, k, box, apix, filter_res):
    bc, _ = classification_box(box, apix, filter_res)
    return n * k / rate * (bc / job.box_c) ** 2, bc


rows = []
for n, k, box, apix, f in [
    (N, K, BOX, APIX, FILTER),
    (100_000, 10, 256, 1.1, 8.0),
    (300_000, 20, 320, 0.83, 6.0),
    (300_000, 50, 320, 0.83, 10.0),
]:
    s, bc = fem_iteration_s(n, k, box, apix, f)
    rows.append(
        {
            "particles": n,
            "K": k,
            "box": box,
            "filter_res_A": f,
            "box_c": bc,
            "F-EM iteration": duration(s),
        }
    )
pd.DataFrame(rows)

# %% [markdown]
# Take these as an upper bound: part of every iteration (reconstructing the K class volumes,
# their FSCs) does not grow with the number of particles, so a small run underestimates the
# throughput. Measure with a few thousand particles of your own data for a better number
# (`benchmarks/` in the repository has the measured kernel throughput per machine).
#
# A job is about 5 O-EM epochs plus up to 20 F-EM iterations (usually fewer): multiply by
# 10–20 for a rough total. Note how the filter resolution matters more than K: 50 classes at
# 10 Å cost less than 20 classes at 6 Å.
#
# ## 2. Memory and `chunk_size`
#
# Preprocessing keeps, per particle, its Fourier coefficients (complex64, 8 bytes) and its CTF
# (float32, 4 bytes) on the disc of `≈ 0.39 · box_c²` pixels: about `12 × 0.39 · box_c²`
# bytes per particle. The class volumes and their statistics are small by comparison (K
# volumes of `(2 · box_c)³` complex values).


# %%
def particles_GB(n, box, apix, filter_res):
    bc, _ = classification_box(box, apix, filter_res)
    return n * 12 * 0.39 * bc**2 / 1e9


pd.DataFrame(
    [
        {
            "particles": n,
            "box": b,
            "filter_res_A": f,
            "preprocessed particles": f"{particles_GB(n, b, a, f):.2f} GB",
        }
        for n, b, a, f in [
            (N, BOX, APIX, FILTER),
            (100_000, 256, 1.1, 8.0),
            (300_000, 320, 0.83, 6.0),
            (1_000_000, 320, 0.83, 6.0),
        ]
    ]
)

# %% [markdown]
# `chunk_size` (default 1024) is the number of particles per kernel call: it bounds the
# *working* memory (per-chunk likelihoods, CTF-weighted slices), not the total. Lower it if a
# GPU runs out of memory; results do not depend on it (beyond float rounding):

# %%
res_chunk = Classification(ds.particles, params.replace(chunk_size=128)).run()
print(
    f"chunk_size 128 vs 1024: same classes (ARI {adjusted_rand_index(result.hard, res_chunk.hard):.3f}), "
    f"max posterior difference {np.abs(result.posteriors - res_chunk.posteriors).max():.1e}"
)

# %% [markdown]
# The parameters that control memory in this version of cryoclass:

# %%
wanted = ("chunk_size", "pad", "cache_dir", "memory_limit_GB")
pd.DataFrame(
    [
        {"name": p["name"], "default": p["default"], "help": p["help"]}
        for p in param_info()
        if p["name"] in wanted
    ]
)

# %% [markdown]
# ## 3. A GPU
#
# The GPU runs the same algorithm with CuPy (the array glue is shared; the hot kernels have an
# array-code twin, gathers and atomic scatter-adds, that CuPy runs). Measured on an NVIDIA H200
# (`benchmarks/RESULTS.md`): 0.7-2.5 s per job at N = 5 000-20 000, box 64, K = 3, 2-3x
# faster than 16 CPU cores, the same classes. Install the extra on a machine with an NVIDIA GPU
# and CUDA 12 (for CUDA 13, `pip install 'cryoclass[gpu-cuda13]'` instead):
#
# ```bash
# pip install 'cryoclass[gpu]'          # cupy-cuda12x
# cryoclass classify particles.star -K 10 --filter-res 8 -o class3d --device gpu
# ```
#
# In Python: `ClassificationParams(..., device="gpu")`. Whether a GPU is usable is
# `cryoclass.backend.cupy_available()`; asking for `"gpu"` without one is a clear
# `ParameterError`, not a crash. This cell runs the same job on the GPU where there is one:

# %%
if cupy_available():
    t0 = time.perf_counter()
    res_gpu = Classification(ds.particles, params.replace(device="gpu")).run()
    print(
        f"GPU: {time.perf_counter() - t0:.1f} s (CPU {wall:.1f} s); "
        f"agreement with the CPU classes: ARI {adjusted_rand_index(result.hard, res_gpu.hard):.3f}"
    )
else:
    try:
        Classification(ds.particles, params.replace(device="gpu"))
    except cryoclass.ParameterError as e:
        print("no GPU here:", e)

# %% [markdown]
# ## 4. A Dask cluster
#
# **Design.** The particles are split into shards, one or more per Dask worker. Each worker
# reads and preprocesses *its own* shard (the images never travel), and in every iteration
# computes, for its particles, the class probabilities (E-step) and the partial sufficient
# statistics of the M-step — the back-projected numerators and weights of every class and
# half-set. Only those travel: `K × (2·box_c)³` complex values per half-set, tens of MB, however
# many particles there are. The driver (your notebook) sums them in shard order, reconstructs
# the classes and sends them back. The result equals the one-process result up to the order of
# floating-point sums. Workers may be GPUs (`dask-cuda`, one worker per GPU) with
# `device="gpu"`.
#
# ```bash
# pip install 'cryoclass[dask]'
# # a scheduler and workers on your cluster (or dask-jobqueue's SLURMCluster from Python):
# dask scheduler &                                  # prints tcp://host:8786
# srun -N 4 dask worker tcp://host:8786 --nthreads 16 &
# cryoclass classify particles.star -K 20 --filter-res 8 -o class3d --scheduler tcp://host:8786
# ```
#
# ```python
# from dask.distributed import Client
# client = Client("tcp://host:8786")           # or Client(LocalCluster(...)) on one machine
# result = cryoclass.Classification(particles, params, client=client).run()
# ```
#
# The cell below runs it on a local cluster of two worker processes, when Dask is installed, the
# installed cryoclass accepts a `client`, and you opted in (`CRYOCLASS_TUTORIAL_DASK=1`).

# %%
try:
    import dask.distributed  # noqa: F401

    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
HAS_CLIENT_API = "client" in inspect.signature(Classification).parameters
print(
    f"dask installed: {HAVE_DASK}; Classification(client=...) supported: {HAS_CLIENT_API}; run it: {RUN_DASK}"
)

if HAVE_DASK and HAS_CLIENT_API and RUN_DASK:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        res_dask = Classification(ds.particles, params, client=client).run()
        print(
            f"Dask, 2 workers: {time.perf_counter() - t0:.1f} s; "
            f"same classes as one process: ARI {adjusted_rand_index(result.hard, res_dask.hard):.3f}"
        )

# %% [markdown]
# On one laptop a cluster does not make anything faster (the Numba kernels already use every
# core); it pays off when the particles no longer fit one machine's memory, or to use the GPUs
# of several nodes.
#
# ## Workshop exercise
#
# 1. Using the throughput you measured, how long would one F-EM iteration of *your* data set
#    take? Which is cheaper: doubling K or going from 8 Å to 6 Å?
# 2. How much memory would the preprocessed particles of your data set need? Would they fit on
#    your GPU?
# 3. Run section 1 with `chunk_size=64` and `chunk_size=4096`. Is one faster? Why might a very
#    small chunk be slow?
