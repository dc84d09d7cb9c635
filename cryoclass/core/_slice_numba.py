"""Numba CPU twins of the fused slice kernels (see :mod:`cryoclass.core.slices`).

The kernels walk the same geometry: for particle ``i`` and disc pixel ``m`` the padded volume
coordinate is ``q = pad · Aᵢᵀ (kx, ky, 0)``; when ``q_x < 0`` the Hermitian mate ``−q`` is used and
the value conjugated. Trilinear weights over the 8 corners; the K class values at a grid point are
contiguous (grid layout ``[z, y, x, K]``). The gathers (log-likelihood, shell statistics) read the
grid as flat ``uint64`` (one complex64 per load) in pixel loops that LLVM vectorises; the
back-projection scatters class by class, or in blocks of three (SLP).
"""

from __future__ import annotations

import llvmlite.binding as _llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_compile import gather_lanes, slp_vectorised, vector_width


@nb.njit(inline="always", fastmath=True, nogil=True)
def _corners(a00, a01, a02, a10, a11, a12, fx, fy, off):  # pragma: no cover - jit
    """Grid corner ``(z0, y0, x0)``, Hermitian sign and the 8 trilinear weights of disc pixel
    ``(fx, fy)`` under the padded rotation ``a``: ``q = (a00 fx + a10 fy, a01 fx + a11 fy,
    a02 fx + a12 fy)``, mirrored to ``q_x ≥ 0`` (sign −1: take the conjugate)."""
    qx = a00 * fx + a10 * fy
    qy = a01 * fx + a11 * fy
    qz = a02 * fx + a12 * fy
    sgn = np.float32(1.0)
    if qx < 0:
        qx = -qx
        qy = -qy
        qz = -qz
        sgn = np.float32(-1.0)
    x0 = int(qx)
    y0f = np.floor(qy)
    z0f = np.floor(qz)
    dx = np.float32(qx - x0)
    dy = np.float32(qy - y0f)
    dz = np.float32(qz - z0f)
    ex = np.float32(1.0) - dx
    ey = np.float32(1.0) - dy
    ez = np.float32(1.0) - dz
    return (
        int(z0f) + off,
        int(y0f) + off,
        x0,
        sgn,
        ez * ey * ex,
        ez * ey * dx,
        ez * dy * ex,
        ez * dy * dx,
        dz * ey * ex,
        dz * ey * dx,
        dz * dy * ex,
        dz * dy * dx,
    )


@intrinsic
def _re_im(typingctx, bits):  # pragma: no cover - jit (typing and codegen run at compile time)
    """``(Re, Im)`` float32 of a complex64 given as its 64 bits (a ``uint64`` view of the grid):
    one 64-bit gather per corner instead of two 32-bit ones. Re is the low half: little-endian,
    as on every platform Numba supports (x86-64, AArch64, ppc64le)."""
    sig = types.UniTuple(types.float32, 2)(types.uint64)

    def codegen(context, builder, signature, args):
        i32, f32 = ir.IntType(32), ir.FloatType()
        lo = builder.bitcast(builder.trunc(args[0], i32), f32)
        hi = builder.lshr(args[0], ir.Constant(ir.IntType(64), 32))
        return context.make_tuple(
            builder, signature.return_type, (lo, builder.bitcast(builder.trunc(hi, i32), f32))
        )

    return sig, codegen


#: LLVM's name of its prefetch intrinsic, which is overloaded on the pointer type: ``p0i8`` while
#: pointers were typed (the LLVM 14-16 of Numba 0.58-0.61), ``p0`` with opaque pointers (LLVM 17+)
_PREFETCH_NAME = "llvm.prefetch.p0i8" if _llvm.llvm_version_info[0] < 17 else "llvm.prefetch.p0"

#: how many disc pixels ahead the back-projection prefetches its accumulator corners
PREFETCH_AHEAD = 8


@intrinsic
def _prefetch(typingctx, arr, idx):  # pragma: no cover - jit (typing and codegen at compile)
    """Hint the CPU to bring ``arr[idx]``'s cache line in for writing (LLVM ``prefetch``, high
    temporal locality). No effect on any value: a hint, which never faults and never changes
    memory; no bounds check (callers pass indices of elements they are about to update)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1]], wraparound=False, boundscheck=False
        )
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_NAME)
        # (address, rw = 1: write, locality = 3: keep in all cache levels, cache type 1: data)
        one, three = ir.Constant(i32, 1), ir.Constant(i32, 3)
        builder.call(fn, [builder.bitcast(ptr, i8p), one, three, one])
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(inline="always", fastmath=True, nogil=True)
def _pixel(a00, a01, a02, a10, a11, a12, fx, fy, off, sx, sy, sz):  # pragma: no cover - jit
    """:func:`_corners` as one flat index ``p`` of corner ``(z0, y0, x0)`` (strides ``sz, sy,
    sx``), the Hermitian sign and the 8 weights; branch-free, so a loop over pixels vectorises."""
    qx = a00 * fx + a10 * fy
    qy = a01 * fx + a11 * fy
    qz = a02 * fx + a12 * fy
    sgn = np.float32(-1.0) if qx < 0 else np.float32(1.0)
    qx = qx * sgn
    qy = qy * sgn
    qz = qz * sgn
    x0f = np.floor(qx)
    y0f = np.floor(qy)
    z0f = np.floor(qz)
    dx = qx - x0f
    dy = qy - y0f
    dz = qz - z0f
    ex = np.float32(1.0) - dx
    ey = np.float32(1.0) - dy
    ez = np.float32(1.0) - dz
    p = (np.int64(z0f) + off) * sz + (np.int64(y0f) + off) * sy + np.int64(x0f) * sx
    return (
        p,
        sgn,
        ez * ey * ex,
        ez * ey * dx,
        ez * dy * ex,
        ez * dy * dx,
        dz * ey * ex,
        dz * ey * dx,
        dz * dy * ex,
        dz * dy * dx,
    )


@nb.njit(inline="always", fastmath=True, nogil=True)
def _trilinear(gq, p, w):  # pragma: no cover - jit
    """``(Re, Im)`` of the grid at corner index ``p`` interpolated with ``w = (sx, sy, sz, w0,
    …, w7)``: the strides and the 8 weights (corner order of :func:`_corners`)."""
    sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7 = w
    r0, i0 = _re_im(gq[p])
    r1, i1 = _re_im(gq[p + sx])
    r2, i2 = _re_im(gq[p + sy])
    r3, i3 = _re_im(gq[p + sy + sx])
    r4, i4 = _re_im(gq[p + sz])
    r5, i5 = _re_im(gq[p + sz + sx])
    r6, i6 = _re_im(gq[p + sz + sy])
    r7, i7 = _re_im(gq[p + sz + sy + sx])
    vr = w0 * r0 + w1 * r1 + w2 * r2 + w3 * r3 + w4 * r4 + w5 * r5 + w6 * r6 + w7 * r7
    vi = w0 * i0 + w1 * i1 + w2 * i2 + w3 * i3 + w4 * i4 + w5 * i5 + w6 * i6 + w7 * i7
    return vr, vi


@nb.njit(inline="always", fastmath=True, nogil=True)
def _residual(xr, xi, c, sgn, ws, v):  # pragma: no cover - jit
    """``ws |X − c V|²`` (float64) for the interpolated ``v = (Re, Im)`` (conjugated if
    ``sgn < 0``)."""
    dr = xr - c * v[0]
    di = xi - c * sgn * v[1]
    return np.float64(ws * (dr * dr + di * di))


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def loglik_kernel(gq, K, ny, nx, A, kx, ky, wsig, X, C, alpha, pad, off, out):  # pragma: no cover
    """out[i, k] = -½ Σ_m wsig[m] |X[i,m] − α_i C[i,m] V_k(q_im)|²  (float64).

    ``gq`` is the complex64 grid ``(Z, Y, X, K)`` (``ny = Y``, ``nx = X``) viewed as flat
    ``uint64``: one 64-bit load per corner and class. Parallel over particles; for each, the
    classes go in blocks of up to four with the *pixel* loop innermost, branch-free, so that
    LLVM vectorises it over pixels (gathers for the corners; compile with
    :func:`._numba_compile.vector_width`). Each block recomputes the pixel geometry, which
    costs less than the scalar loop over classes it replaces up to K ≈ 10 (RESULTS.md).
    """
    n = X.shape[0]
    M = kx.shape[0]
    sx = K
    sy = nx * sx
    sz = ny * sy
    Xf = X.view(np.float32)  # (n, 2M): Re, Im interleaved
    for i in nb.prange(n):
        a00 = A[i, 0, 0] * pad
        a01 = A[i, 0, 1] * pad
        a02 = A[i, 0, 2] * pad
        a10 = A[i, 1, 0] * pad
        a11 = A[i, 1, 1] * pad
        a12 = A[i, 1, 2] * pad
        al = alpha[i]
        kb = 0
        while kb < K:
            nk = min(4, K - kb)
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            # one loop per block size: each has a fixed set of sums, so each vectorises. The
            # shared prelude stays written out: folded into an inline helper returning nested
            # tuples it made Numba's parfors pass fail with an AssertionError (0.68.1).
            if nk == 4:
                for m in range(M):
                    p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
                        a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
                    )
                    p += kb
                    c, xr, xi, ws = C[i, m] * al, Xf[i, 2 * m], Xf[i, 2 * m + 1], wsig[m]
                    w = (sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7)
                    s0 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p, w))
                    s1 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 1, w))
                    s2 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 2, w))
                    s3 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 3, w))
            elif nk == 3:
                for m in range(M):
                    p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
                        a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
                    )
                    p += kb
                    c, xr, xi, ws = C[i, m] * al, Xf[i, 2 * m], Xf[i, 2 * m + 1], wsig[m]
                    w = (sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7)
                    s0 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p, w))
                    s1 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 1, w))
                    s2 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 2, w))
            elif nk == 2:
                for m in range(M):
                    p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
                        a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
                    )
                    p += kb
                    c, xr, xi, ws = C[i, m] * al, Xf[i, 2 * m], Xf[i, 2 * m + 1], wsig[m]
                    w = (sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7)
                    s0 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p, w))
                    s1 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p + 1, w))
            else:
                for m in range(M):
                    p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
                        a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
                    )
                    p += kb
                    c, xr, xi, ws = C[i, m] * al, Xf[i, 2 * m], Xf[i, 2 * m + 1], wsig[m]
                    w = (sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7)
                    s0 += _residual(xr, xi, c, sgn, ws, _trilinear(gq, p, w))
            out[i, kb] = -0.5 * s0
            if nk > 1:
                out[i, kb + 1] = -0.5 * s1
            if nk > 2:
                out[i, kb + 2] = -0.5 * s2
            if nk > 3:
                out[i, kb + 3] = -0.5 * s3
            kb += nk


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def backproject_kernel(
    A, kx, ky, wsig, X, C, alpha, r, half, pad, off, rmin, accf, ny, nx, nblocks
):  # pragma: no cover - jit
    """acc[h, q, k] += r_ik · (Re, Im of α C X wsig, α² C² wsig)  (trilinear scatter).

    ``accf`` is the float32 accumulator ``(2, Z, Y, X, K, 3)`` flattened to ``(2, Z·Y·X·K·3)``
    (``ny = Y``, ``nx = X``): numerator and weight interleaved so one corner's K classes are one
    contiguous run. Parallel over (half-set, block of classes) pairs: each task owns half ``h``
    and classes ``k0:k1``, so no two threads write the same memory and no thread needs a copy
    of the grids; the half-sets split the work evenly even for K = 1.

    Where at least half of a task's classes are active (``r ≥ rmin``; soft assignments), classes
    go in blocks of three: 9 contiguous floats per corner, written as straight-line code that
    LLVM's SLP vectoriser turns into vector adds (compile with :func:`._numba_compile.
    slp_vectorised`); an inactive class in a block adds 0. The rest, and sparse particles (hard
    assignments), go class by class; a single class (K = 1, the consensus) writes corners x0
    and x0 + 1 as one run of six. Sums are the same, in the same order, either way.

    Where a task's classes are one block of three (K = 3 on two threads: the O-EM and F-EM
    passes), each particle's pixel geometry and data are computed first, in a loop that
    vectorises (:func:`_slice_pixels`), then scattered with the responsibilities read once
    (:func:`_scatter_block3`): the same sums, bit for bit. A soft pass of 5 000 particles at the
    48³ box (pad 2, a fresh accumulator, 3 interleaved runs) took 75-129 ms before, 62-70 ms
    with it; in the job, 13.7 → 13.0 ms per 1 024 particles. A particle with one class of several
    (the init's one-hot passes) goes the same way into that class alone (:func:`_scatter_one`):
    before the prefetch that extra pass over the pixels cost more than it saved (+40 % for
    one-hot passes of 8 classes), but the prefetch computes each pixel's geometry twice in the
    class-by-class loop; with the pass, one-hot of 8 classes at the init's 20 px box 8.1 → 6.0
    ms, of 4 classes at 48³ 60 → 45 ms (N = 5 000, medians of 9). Bit for bit the same sums.
    K = 1 keeps the loop: the pass made its sums differ in the last bit there.

    The scatters wait on memory: at the 48³ box (pad 2) a half-set's accumulator is 16 MB for
    K = 3, beyond the caches, and every pixel updates four runs of it at new places. So the
    block-of-three scatter and the single-class one (K = 1, one-hot) prefetch the four runs of
    the pixel :data:`PREFETCH_AHEAD` pixels ahead (:func:`_prefetch_runs`). Same sums, bit for
    bit. Measured on a real job's passes (N = 5 000, 2-core EPYC, medians of 5): a full K = 3
    soft pass at 48³ 155 → 99 ms, the K = 1 consensus 64 → 52 ms; at the init's 20 px box
    (accumulators that fit the caches) no change, so the soft many-class path does not prefetch.
    """
    n = X.shape[0]
    M = kx.shape[0]
    K = r.shape[1]
    K3 = 3 * K
    # flat offsets of the 7 other corners from (z0, y0, x0)
    ox = np.uint64(K3)
    oy = np.uint64(nx * K3)
    oz = np.uint64(ny * nx * K3)
    strides = (np.int64(K3), np.int64(nx * K3), np.int64(ny * nx * K3))  # x, y, z
    oyx = oy + ox
    ozx = oz + ox
    ozy = oz + oy
    ozyx = oz + oy + ox
    for task in nb.prange(2 * nblocks):
        hb = task % 2
        b = task // 2
        k0 = b * K // nblocks
        k1 = (b + 1) * K // nblocks
        nk = k1 - k0
        act = np.empty(max(nk, 1), np.int64)  # this particle's classes with r ≥ rmin
        # one particle's pixels for _scatter_block3 (see _slice_pixels)
        corner = np.empty(M, np.int64)
        wts = np.empty((8, M), np.float32)
        vals = np.empty((3, M), np.float32)
        g = accf[hb]
        for i in range(n):
            if half[i] != hb:
                continue
            nact = 0
            for k in range(k0, k1):
                if r[i, k] >= rmin:
                    act[nact] = k
                    nact += 1
            if nact == 0:
                continue
            # classes k0 .. k0 + nblk - 1 in blocks of 3, the rest one by one
            nblk = (nk // 3) * 3 if 2 * nact >= nk else 0
            if nblk == nk == 3:  # this task's classes are one block of three
                _slice_pixels(
                    A, i, pad, kx, ky, off, strides, wsig, X, C, alpha[i], corner, wts, vals
                )
                _scatter_block3(g, r, i, k0, rmin, corner, wts, vals, ox, oy, oz)
                continue
            if nact == 1 and K > 1:  # one class of several to write (one-hot passes)
                _slice_pixels(
                    A, i, pad, kx, ky, off, strides, wsig, X, C, alpha[i], corner, wts, vals
                )
                _scatter_one(g, r[i, act[0]], act[0], corner, wts, vals, ox, oy, oz)
                continue
            a00 = A[i, 0, 0] * pad
            a01 = A[i, 0, 1] * pad
            a02 = A[i, 0, 2] * pad
            a10 = A[i, 1, 0] * pad
            a11 = A[i, 1, 1] * pad
            a12 = A[i, 1, 2] * pad
            al = alpha[i]
            for m in range(M):
                if K == 1 and m + PREFETCH_AHEAD < M:  # the consensus: corners prefetched
                    zf, yf, xf, _s, _0, _1, _2, _3, _4, _5, _6, _7 = _corners(
                        a00, a01, a02, a10, a11, a12, kx[m + PREFETCH_AHEAD],
                        ky[m + PREFETCH_AHEAD], off,
                    )  # fmt: skip
                    q = np.uint64(((zf * ny + yf) * nx + xf) * K3)
                    _prefetch_runs(g, q, ox + np.uint64(2), oy, oz)
                z0, y0, x0, sgn, w000, w001, w010, w011, w100, w101, w110, w111 = _corners(
                    a00, a01, a02, a10, a11, a12, kx[m], ky[m], off
                )
                ws = wsig[m]
                c = C[i, m] * al
                dr = X[i, m].real * c * ws
                di = X[i, m].imag * c * ws * sgn
                wv = c * c * ws
                base = np.uint64(((z0 * ny + y0) * nx + x0) * K3)
                if K == 1:  # one class: corners x0 and x0 + 1 are 6 contiguous floats
                    rk = r[i, 0]
                    vr = rk * dr
                    vi = rk * di
                    vw = rk * wv
                    _add3x2(g, base, w000, w001, vr, vi, vw)
                    _add3x2(g, base + oy, w010, w011, vr, vi, vw)
                    _add3x2(g, base + oz, w100, w101, vr, vi, vw)
                    _add3x2(g, base + ozy, w110, w111, vr, vi, vw)
                    continue
                for kb in range(k0, k0 + nblk, 3):
                    r0 = _active(r[i, kb], rmin)
                    r1 = _active(r[i, kb + 1], rmin)
                    r2 = _active(r[i, kb + 2], rmin)
                    c0, c1, c2 = r0 * dr, r0 * di, r0 * wv
                    c3, c4, c5 = r1 * dr, r1 * di, r1 * wv
                    c6, c7, c8 = r2 * dr, r2 * di, r2 * wv
                    p = base + np.uint64(3 * kb)
                    _add9(g, p, w000, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + ox, w001, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + oy, w010, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + oyx, w011, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + oz, w100, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + ozx, w101, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + ozy, w110, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                    _add9(g, p + ozyx, w111, c0, c1, c2, c3, c4, c5, c6, c7, c8)
                for a in range(nact):
                    k = act[a]
                    if k < k0 + nblk:  # done in a block
                        continue
                    rk = r[i, k]
                    vr = rk * dr
                    vi = rk * di
                    vw = rk * wv
                    p = base + np.uint64(3 * k)
                    _add3(g, p, w000, vr, vi, vw)
                    _add3(g, p + ox, w001, vr, vi, vw)
                    _add3(g, p + oy, w010, vr, vi, vw)
                    _add3(g, p + oyx, w011, vr, vi, vw)
                    _add3(g, p + oz, w100, vr, vi, vw)
                    _add3(g, p + ozx, w101, vr, vi, vw)
                    _add3(g, p + ozy, w110, vr, vi, vw)
                    _add3(g, p + ozyx, w111, vr, vi, vw)


@nb.njit(inline="always", fastmath=True, nogil=True)
def _slice_pixels(
    A, i, pad, kx, ky, off, strides, wsig, X, C, al, corner, wts, vals
):  # pragma: no cover
    """Particle ``i``'s disc pixels, for :func:`_scatter_block3`: ``corner[m]``, the flat
    accumulator index of pixel ``m``'s corner ``(z0, y0, x0)`` (``strides`` of x, y, z; class
    0, Re); ``wts[:, m]``, its 8 trilinear weights (:func:`_pixel`, the order of
    :func:`_corners`); ``vals[:, m]``, its data ``α C X wsig`` (Re, Im; conjugated on the
    Hermitian side) and weight ``α² C² wsig``. No stores to the grid: the loop vectorises."""
    a00 = A[i, 0, 0] * pad
    a01 = A[i, 0, 1] * pad
    a02 = A[i, 0, 2] * pad
    a10 = A[i, 1, 0] * pad
    a11 = A[i, 1, 1] * pad
    a12 = A[i, 1, 2] * pad
    sx, sy, sz = strides
    for m in range(kx.shape[0]):
        p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
            a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
        )
        corner[m] = p
        wts[0, m] = w0
        wts[1, m] = w1
        wts[2, m] = w2
        wts[3, m] = w3
        wts[4, m] = w4
        wts[5, m] = w5
        wts[6, m] = w6
        wts[7, m] = w7
        ws = wsig[m]
        c = C[i, m] * al
        vals[0, m] = X[i, m].real * c * ws
        vals[1, m] = X[i, m].imag * c * ws * sgn
        vals[2, m] = c * c * ws


@nb.njit(inline="always", fastmath=True, nogil=True)
def _scatter_block3(g, r, i, kb, rmin, corner, wts, vals, ox, oy, oz):  # pragma: no cover - jit
    """Particle ``i``'s pixels (:func:`_slice_pixels`) into classes ``kb .. kb + 2``: nine
    contiguous floats per corner (:func:`_add9`), pixel after pixel as in the kernel's own
    loop, so every sum is the same."""
    r0 = _active(r[i, kb], rmin)
    r1 = _active(r[i, kb + 1], rmin)
    r2 = _active(r[i, kb + 2], rmin)
    M = corner.shape[0]
    last = np.uint64(8)  # the last float of corner x0 + 1's nine (x0's run of 18 floats)
    for m in range(M):
        if m + PREFETCH_AHEAD < M:  # the 4 runs of 18 floats pixel m + AHEAD will update
            q = np.uint64(corner[m + PREFETCH_AHEAD] + 3 * kb)
            _prefetch_runs(g, q, ox + last, oy, oz)
        dr, di, wv = vals[0, m], vals[1, m], vals[2, m]
        c0, c1, c2 = r0 * dr, r0 * di, r0 * wv
        c3, c4, c5 = r1 * dr, r1 * di, r1 * wv
        c6, c7, c8 = r2 * dr, r2 * di, r2 * wv
        p = np.uint64(corner[m] + 3 * kb)
        _add9(g, p, wts[0, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + ox, wts[1, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oy, wts[2, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oy + ox, wts[3, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oz, wts[4, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oz + ox, wts[5, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oz + oy, wts[6, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)
        _add9(g, p + oz + oy + ox, wts[7, m], c0, c1, c2, c3, c4, c5, c6, c7, c8)


@nb.njit(inline="always", fastmath=True, nogil=True)
def _scatter_one(g, rk, k, corner, wts, vals, ox, oy, oz):  # pragma: no cover - jit
    """Particle pixels (:func:`_slice_pixels`) into the one class ``k`` of several that it has
    (responsibility ``rk``; a one-hot pass): three floats per corner, pixel after pixel,
    prefetching the runs of the pixel :data:`PREFETCH_AHEAD` ahead. The same sums, in the same
    order, bit for bit, as the kernel's class-by-class loop, whose per-pixel geometry (twice:
    once for the prefetch) it replaces by one vectorised pass (:func:`_slice_pixels`)."""
    M = corner.shape[0]
    kk = np.uint64(3 * k)
    last = ox + np.uint64(2)  # the last float of corner x0 + 1's three
    for m in range(M):
        if m + PREFETCH_AHEAD < M:
            _prefetch_runs(g, np.uint64(corner[m + PREFETCH_AHEAD]) + kk, last, oy, oz)
        vr = rk * vals[0, m]
        vi = rk * vals[1, m]
        vw = rk * vals[2, m]
        p = np.uint64(corner[m]) + kk
        _add3(g, p, wts[0, m], vr, vi, vw)
        _add3(g, p + ox, wts[1, m], vr, vi, vw)
        _add3(g, p + oy, wts[2, m], vr, vi, vw)
        _add3(g, p + oy + ox, wts[3, m], vr, vi, vw)
        _add3(g, p + oz, wts[4, m], vr, vi, vw)
        _add3(g, p + oz + ox, wts[5, m], vr, vi, vw)
        _add3(g, p + oz + oy, wts[6, m], vr, vi, vw)
        _add3(g, p + oz + oy + ox, wts[7, m], vr, vi, vw)


@nb.njit(inline="always", fastmath=True, nogil=True)
def _prefetch_runs(g, q, end, oy, oz):  # pragma: no cover - jit
    """Prefetch the four runs a pixel updates (rows (z0, y0), (z0, y0 + 1), (z0 + 1, y0),
    (z0 + 1, y0 + 1), each from corner x0 to x0 + 1): each run's first and last float (``q`` and
    ``q + end``), so both its cache lines come in even where it straddles one."""
    _prefetch(g, q)
    _prefetch(g, q + end)
    _prefetch(g, q + oy)
    _prefetch(g, q + oy + end)
    _prefetch(g, q + oz)
    _prefetch(g, q + oz + end)
    _prefetch(g, q + oz + oy)
    _prefetch(g, q + oz + oy + end)


@nb.njit(inline="always", fastmath=True, nogil=True)
def _active(rk, rmin):  # pragma: no cover - jit
    """``rk`` if the class is active (``rk ≥ rmin``), else 0 (a block adds nothing for it)."""
    return rk if rk >= rmin else np.float32(0.0)


@nb.njit(inline="always", fastmath=True, nogil=True)
def _add3(g, p, w, vr, vi, vw):  # pragma: no cover - jit
    g[p] += w * vr
    g[p + np.uint64(1)] += w * vi
    g[p + np.uint64(2)] += w * vw


@nb.njit(inline="always", fastmath=True, nogil=True)
def _add3x2(g, p, w0, w1, vr, vi, vw):  # pragma: no cover - jit
    """One class (K = 1): the (Re, Im, W) of corners x0 and x0 + 1, six contiguous floats."""
    g[p] += w0 * vr
    g[p + np.uint64(1)] += w0 * vi
    g[p + np.uint64(2)] += w0 * vw
    g[p + np.uint64(3)] += w1 * vr
    g[p + np.uint64(4)] += w1 * vi
    g[p + np.uint64(5)] += w1 * vw


@nb.njit(inline="always", fastmath=True, nogil=True)
def _add9(g, p, w, c0, c1, c2, c3, c4, c5, c6, c7, c8):  # pragma: no cover - jit
    """Nine contiguous accumulator floats (three classes × Re, Im, W) += w · c (straight-line
    code on consecutive addresses: one vector add once SLP-vectorised)."""
    g[p] += w * c0
    g[p + np.uint64(1)] += w * c1
    g[p + np.uint64(2)] += w * c2
    g[p + np.uint64(3)] += w * c3
    g[p + np.uint64(4)] += w * c4
    g[p + np.uint64(5)] += w * c5
    g[p + np.uint64(6)] += w * c6
    g[p + np.uint64(7)] += w * c7
    g[p + np.uint64(8)] += w * c8


@nb.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def slice_stats_kernel(
    gq, K, ny, nx, A, kx, ky, shell, X, C, pad, off, sxx, sxp, spp
):  # pragma: no cover
    """Per-particle, per-shell sums against one volume (class 0 of the grid ``gq``, the flat
    ``uint64`` view of :func:`loglik_kernel`): ``sxx = Σ w|X|²``, ``sxp = Σ w Re(X* C V)``,
    ``spp = Σ w C²|V|²`` with the Hermitian weight ``w = 2`` for ``kx > 0`` and 1 on the
    ``kx = 0`` line. For the noise model and the scale. The projection ``C V`` of each particle
    is gathered first, in a pixel loop that vectorises (see :func:`loglik_kernel`); the shell
    sums, indexed by pixel, follow in a scalar loop."""
    n = X.shape[0]
    M = kx.shape[0]
    sx = K
    sy = nx * sx
    sz = ny * sy
    Xf = X.view(np.float32)
    for i in nb.prange(n):
        pr = np.empty(M, np.float32)
        pim = np.empty(M, np.float32)
        a00 = A[i, 0, 0] * pad
        a01 = A[i, 0, 1] * pad
        a02 = A[i, 0, 2] * pad
        a10 = A[i, 1, 0] * pad
        a11 = A[i, 1, 1] * pad
        a12 = A[i, 1, 2] * pad
        for m in range(M):
            p, sgn, w0, w1, w2, w3, w4, w5, w6, w7 = _pixel(
                a00, a01, a02, a10, a11, a12, kx[m], ky[m], off, sx, sy, sz
            )
            vr, vi = _trilinear(gq, p, (sx, sy, sz, w0, w1, w2, w3, w4, w5, w6, w7))
            pr[m] = C[i, m] * vr
            pim[m] = C[i, m] * vi * sgn
        for m in range(M):
            xr = Xf[i, 2 * m]
            xi = Xf[i, 2 * m + 1]
            s = shell[m]
            wt = 2.0 if kx[m] > 0 else 1.0
            sxx[i, s] += wt * (xr * xr + xi * xi)
            sxp[i, s] += wt * (xr * pr[m] + xi * pim[m])
            spp[i, s] += wt * (pr[m] * pr[m] + pim[m] * pim[m])


#: the back-projection as called: compiled with LLVM's SLP vectoriser (see _numba_compile;
#: checked against the array code once per binary, ``slices._verified_backproject_kernel``)
backproject_kernel_slp = slp_vectorised(backproject_kernel)


#: the log-likelihood gather as called: vectorised over pixels, 8 lanes with AVX-512, else the
#: vectoriser's own width (:func:`._numba_compile.gather_lanes`; checked against the array code
#: once per binary, ``slices._verified_kernel``)
_gather_width = vector_width(gather_lanes())
loglik_kernel_wide = _gather_width(loglik_kernel)
#: the shell statistics' gather, the same way (checked with the log-likelihood kernel)
slice_stats_kernel_wide = _gather_width(slice_stats_kernel)


def loglik_kernel_plain():
    """The log-likelihood kernel compiled with the vectoriser's own width (not cached)."""
    return nb.njit(parallel=True, fastmath=True, nogil=True)(loglik_kernel.py_func)


def slice_stats_kernel_plain():
    """The shell-statistics kernel compiled with the vectoriser's own width (not cached)."""
    return nb.njit(parallel=True, fastmath=True, nogil=True)(slice_stats_kernel.py_func)


def backproject_kernel_plain():
    """The same kernel compiled without SLP, for where the SLP compile is wrong (not cached on
    disk: the cache holds the SLP one)."""
    return nb.njit(parallel=True, fastmath=True, nogil=True)(backproject_kernel.py_func)
