r"""Winograd F(4x4, 3x3): a 3x3, stride-1 convolution with 4x fewer multiplications than im2col + GEMM.

The maths (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Cut the output into
4x4 tiles; tile t of output channel k needs the 6x6 input window d_{t,c} under it in each input channel
c (rows 4*th - ph ... 4*th - ph + 5, zero outside the image). Then, with the constant matrices below,

    y_{t,k} = A^T [ sum_c U_{k,c} (.) V_{t,c} ] A        U_{k,c} = G w_{k,c} G^T   (6x6, once per step)
                                                         V_{t,c} = B^T d_{t,c} B   (6x6, per tile)

where (.) is the element-wise product. For each of the 36 positions (a, b) of the 6x6 "Winograd domain"
the sum over c is a matrix product, so a chunk of tiles costs 36 GEMMs of (tiles, C) @ (C, K): 36
multiplications per 16 outputs and input channel, against 144 for the direct sum. The transforms are
adds and multiplications by small constants (float32 error measured on VGG-like layers: about 4x that of
im2col + GEMM, ~1e-6 of the output's RMS).

The backward. dW is the same computation transposed (each step's adjoint, in reverse order); dx is the
forward algorithm again, since a stride-1 convolution's input gradient is itself a 3x3 convolution:

    Z_{t,k}  = A dY_{t,k} A^T                        (6x6 from the 4x4 tile of grad_output)
    dU_{k,c} = sum_t Z_{t,k} (.) V_{t,c}              36 GEMMs (C, tiles) @ (tiles, K)
    dw_{k,c} = G^T dU_{k,c} G                        = sum_{n,h,w} dY[n,k,h,w] x_pad[n,c,h+i,w+j], the textbook dW
    dx       = the forward above on dY zero-padded by (2 - ph, 2 - pw), with the kernel flipped and its
               channel axes swapped, w'[c, k, i, j] = w[k, c, 2 - i, 2 - j]
             = the textbook dx[n,c,r,s] = sum_{k,i,j} dY_pad[n,k,r+i,s+j] w[k,c,2-i,2-j] (full correlation)

Layout. The kernels work on one chunk of images ``n0 <= n < n1`` with the chunk's images and channels
side by side as the last, contiguous axis ``l = (n - n0)*C + c`` (so every transform is a loop over a
contiguous vector of length L = (n1 - n0)*C, which vectorises whatever the image size):

    xt[r + ph, s + pw, l]  = x[n, c, r, s]     zero-bordered "HWL" copy of the chunk  (nchw_to_hwl)
    v[a*6 + b, t, l]       = V_{t,c}[a, b]     t = th*tiles_w + tw                      (input_transform)
    v.reshape(36, T*nb, C) is then the GEMMs' left operand: row t*nb + (n - n0), column c.

The Winograd-domain buffers get one spare GEMM row per position and the spatial ones 16 spare entries per
vector (``_padded``), so that no two streams a kernel reads or writes together sit a multiple of 4 KB
apart (such addresses compete for one set of the L1 cache: a power-of-two layout ran 3-4x slower).

Threads. ``forward`` and ``backward`` take the batch cut into chunks (``bounds``) and run them in one
parallel Numba loop: chunk i on thread slot i % slots, each slot with its own scratch, every GEMM of a
chunk on that thread (``kernels/blas.py``; the caller keeps the BLAS single-threaded meanwhile). A chunk
writes only its own images and its own dU, so the results do not depend on which thread ran it; the
chunks' dU are summed afterwards in chunk order (``weight_grad``). One hand-off per layer call costs
about 20 us; the Python thread pool that ran chunks before cost 120-175 us, as much as a whole 4x4-map
layer's work. The stage kernels take C-contiguous float32 or float64 arrays and check no index: the
caller passes shapes that agree.
"""
import math

import numba
import numpy as np

from . import blas

__all__ = ["BT", "G", "AT", "TILE", "weight_transform", "weight_grad", "tiles", "nchw_to_hwl", "hwl_to_nchw",
           "input_transform", "output_transform", "output_adjoint", "forward", "backward"]

TILE = 4  # output tile side; the input window is TILE + 2 = 6

# Interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray's matrices).
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], np.float64)


@numba.njit(cache=True)
def tiles(h_out, w_out):
    """Tiles per image along each axis: ``(ceil(h_out / 4), ceil(w_out / 4))``."""
    return -(-h_out // TILE), -(-w_out // TILE)


# (G w G^T)[a, b] = sum_ij G[a, i] G[b, j] w[i, j]: one (36, 9) matrix for the two-sided product.
_GG = np.kron(G, G)


def weight_transform(weight, dtype):
    """``u[a*6 + b, c, k] = (G w[k, c] G^T)[a, b]``: the (36, C_in, C_out) right operands of the GEMMs.

    Computed in float64 and rounded once to ``dtype``.
    """
    out_channels, in_channels = weight.shape[:2]
    w9 = np.ascontiguousarray(weight.reshape(out_channels, in_channels, 9).transpose(2, 1, 0), np.float64)
    return (_GG @ w9.reshape(9, -1)).astype(dtype).reshape(36, in_channels, out_channels)  # w9: (9, c*C_out + k)


def weight_grad(grad_u):
    """``dw[k, c] = G^T dU[k, c] G`` from ``grad_u`` (36, C_in, C_out), or from a stack of them (n, 36, C_in,
    C_out: the chunks' dU) summed in float64 in stack order (the same sum every run): the (C_out, C_in, 3, 3)
    gradient, in float64."""
    if grad_u.ndim == 4:
        total = np.empty(grad_u.shape[1:])
        _sum_in_order(grad_u.reshape(grad_u.shape[0], -1), total.reshape(-1))
        grad_u = total
    _, in_channels, out_channels = grad_u.shape
    # dw[k, c, i, j] = sum_p GG[p, i*3 + j] dU[p, c, k]: one (9, 36) @ (36, C_in*C_out) product, read as
    # (i, j, c, k) and viewed as (k, c, i, j)
    dw = _GG.T @ grad_u.reshape(36, in_channels * out_channels).astype(np.float64, copy=False)
    return dw.reshape(3, 3, in_channels, out_channels).transpose(3, 2, 0, 1)


@numba.njit(nogil=True, cache=True)
def _sum_in_order(stack, total):
    """``total[j] = stack[0, j] + stack[1, j] + ...`` in float64, added in that order."""
    total[:] = 0.0
    for i in range(stack.shape[0]):
        row = stack[i]
        for j in range(total.shape[0]):
            total[j] += row[j]


@numba.njit(nogil=True, cache=True)
def nchw_to_hwl(x, n0, n1, ph, pw, xt):
    """``xt[r + ph, s + pw, (n - n0)*C + c] = x[n, c, r, s]``; the border of ``xt`` (rows and columns
    outside the image) is set to 0.

    ``xt`` is (Hp, Wp, Lp) with Hp >= H + ph, Wp >= W + pw and Lp >= L = (n1 - n0)*C. The chunk of ``x`` is
    an (L, H*W) matrix and ``xt`` holds its transpose, copied in blocks of 8 rows x 8 columns (fewer
    columns at the end of a row narrower than a multiple of 8, such as a 4x4 map's) written out in full (a
    plane is often exactly 4 KB: a longer walk down a column of the matrix would thrash one cache set).
    Elements left one at a time (a strided walk LLVM turns into slow gathers): only the last L % 8 rows.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    length = (n1 - n0) * channels
    src = x.reshape(x.shape[0] * channels, height * width)[n0 * channels:n1 * channels]  # (L, H*W)
    xt[:ph] = 0
    xt[ph + height:] = 0
    xt[ph:ph + height, :pw] = 0
    xt[ph:ph + height, pw + width:] = 0
    full_l = length - length % 8
    for r in range(height):
        for s0 in range(0, width, 8):  # blocks of 8 l x 8 s (fewer s in the last block, e.g. 4x4 maps)
            p0 = r * width + s0
            for l0 in range(0, full_l, 8):
                for k in range(min(8, width - s0)):
                    d = xt[r + ph, s0 + k + pw]
                    p = p0 + k
                    d[l0], d[l0 + 1], d[l0 + 2], d[l0 + 3] = src[l0, p], src[l0 + 1, p], src[l0 + 2, p], src[l0 + 3, p]
                    d[l0 + 4], d[l0 + 5], d[l0 + 6], d[l0 + 7] = src[l0 + 4, p], src[l0 + 5, p], src[l0 + 6, p], \
                        src[l0 + 7, p]
        for s in range(width):  # what the blocks left: the last l
            d = xt[r + ph, s + pw]
            for l in range(full_l, length):
                d[l] = src[l, r * width + s]


@numba.njit(nogil=True, cache=True)
def hwl_to_nchw(xt, r0, s0, bias, n0, n1, out):
    """``out[n, c, r, s] = xt[r + r0, s + s0, (n - n0)*C + c] + bias[c]`` for n0 <= n < n1 (all r, s).

    The transpose of ``nchw_to_hwl`` (same blocking), with the bias added on the way.
    """
    channels, height, width = out.shape[1], out.shape[2], out.shape[3]
    length = (n1 - n0) * channels
    dst = out.reshape(out.shape[0] * channels, height * width)[n0 * channels:n1 * channels]  # (L, H*W)
    bias_l = np.empty(length, out.dtype)  # bias_l[l] = bias[c]: no division in the loops below
    for i in range(n1 - n0):
        bias_l[i * channels:(i + 1) * channels] = bias
    full_l, full_s = length - length % 8, width - width % 8
    for r in range(height):
        row = xt[r + r0]
        for q0 in range(0, full_s, 8):
            p0, q = r * width + q0, q0 + s0
            for l0 in range(0, full_l, 8):
                for k in range(8):
                    l = l0 + k
                    b = bias_l[l]
                    d = dst[l, p0:p0 + 8]
                    d[0], d[1], d[2], d[3] = row[q, l] + b, row[q + 1, l] + b, row[q + 2, l] + b, row[q + 3, l] + b
                    d[4], d[5], d[6], d[7] = row[q + 4, l] + b, row[q + 5, l] + b, row[q + 6, l] + b, row[q + 7, l] + b
        if full_s < width:  # the last s (all of them on maps narrower than 8), 8 l at a time
            p0, q = r * width + full_s, full_s + s0
            for l0 in range(0, full_l, 8):
                b = bias_l[l0:l0 + 8]
                for k in range(width - full_s):
                    v = row[q + k]
                    p = p0 + k
                    dst[l0, p], dst[l0 + 1, p], dst[l0 + 2, p], dst[l0 + 3, p] = v[l0] + b[0], v[l0 + 1] + b[1], \
                        v[l0 + 2] + b[2], v[l0 + 3] + b[3]
                    dst[l0 + 4, p], dst[l0 + 5, p], dst[l0 + 6, p], dst[l0 + 7, p] = v[l0 + 4] + b[4], \
                        v[l0 + 5] + b[5], v[l0 + 6] + b[6], v[l0 + 7] + b[7]
        for l in range(full_l, length):  # what the blocks left: the last l
            b = bias_l[l]
            d = dst[l]
            for s in range(width):
                d[r * width + s] = row[s + s0, l] + b


# The 1-D transforms, on scalars: each 2-D transform applies one along columns (into ``tmp``), then along
# rows. Loading all inputs before storing any output lets the compiler keep them in registers (it cannot
# know that the arrays do not overlap). Multipliers come typed like the data: an int times a float32
# would compute in float64.

@numba.njit(inline="always")
def _bt(d0, d1, d2, d3, d4, d5, two, four, five):
    """B^T d: 6 -> 6 (rows of BT above)."""
    return (four * d0 - five * d2 + d4,
            d3 + d4 - four * (d1 + d2),
            four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4,
            two * (d1 - d3) - d2 + d4,
            four * d1 - five * d3 + d5)


@numba.njit(inline="always")
def _at(m0, m1, m2, m3, m4, m5, two, four, eight):
    """A^T m: 6 -> 4 (rows of AT above)."""
    p, q, u, w = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + p + u, q + two * w, p + four * u, q + eight * w + m5


@numba.njit(inline="always")
def _a(g0, g1, g2, g3, two, four, eight):
    """A g: 4 -> 6 (columns of AT), the transpose of ``_at``."""
    p, q, u, w = g0 + g2, g1 + g3, g0 + four * g2, two * g1 + eight * g3
    return g0, p + q, p - q, u + w, u - w, g3


# The 2-D transforms work tile by tile on vectors of length L (the chunk's images x channels). Spatial
# arrays are (rows, columns, Lp) with Lp >= L; Winograd-domain arrays are (36, >= tiles*L): position
# a*6 + b, tile t's vector at [t*L : (t+1)*L].

@numba.njit(nogil=True, cache=True)
def input_transform(xt, length, tiles_h, tiles_w, v, tmp):
    """``v[a*6 + b, tile t] = (B^T d_t B)[a, b]``, d_t = ``xt[4*th : 4*th + 6, 4*tw : 4*tw + 6, :L]``.

    ``tmp`` is (6, 6, >= L) scratch.
    """
    two, four, five = xt.dtype.type(2), xt.dtype.type(4), xt.dtype.type(5)
    for th in range(tiles_h):
        for tw in range(tiles_w):
            r, s = 4 * th, 4 * tw
            for j in range(6):  # tmp[:, j] = B^T d[:, j]
                d0, d1, d2, d3, d4, d5 = xt[r, s + j], xt[r + 1, s + j], xt[r + 2, s + j], \
                    xt[r + 3, s + j], xt[r + 4, s + j], xt[r + 5, s + j]
                e0, e1, e2, e3, e4, e5 = tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j], tmp[5, j]
                for l in range(length):
                    e0[l], e1[l], e2[l], e3[l], e4[l], e5[l] = _bt(d0[l], d1[l], d2[l], d3[l], d4[l], d5[l],
                                                                   two, four, five)
            k = (th * tiles_w + tw) * length
            for a in range(6):  # v[a, :] = tmp[a, :] B  (= B^T applied to the row)
                d0, d1, d2, d3, d4, d5 = tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3], tmp[a, 4], tmp[a, 5]
                o = 6 * a
                e0, e1, e2 = v[o, k:k + length], v[o + 1, k:k + length], v[o + 2, k:k + length]
                e3, e4, e5 = v[o + 3, k:k + length], v[o + 4, k:k + length], v[o + 5, k:k + length]
                for l in range(length):
                    e0[l], e1[l], e2[l], e3[l], e4[l], e5[l] = _bt(d0[l], d1[l], d2[l], d3[l], d4[l], d5[l],
                                                                   two, four, five)


@numba.njit(nogil=True, cache=True)
def output_transform(m, length, tiles_h, tiles_w, yt, tmp):
    """``yt[4*th + i, 4*tw + j, :L] = (A^T M_t A)[i, j]``, M_t[a, b] = ``m[a*6 + b, tile t]``.

    ``yt`` is (4*tiles_h, 4*tiles_w, >= L); ``tmp`` is (6, 4, >= L) scratch.
    """
    two, four, eight = m.dtype.type(2), m.dtype.type(4), m.dtype.type(8)
    for th in range(tiles_h):
        for tw in range(tiles_w):
            k = (th * tiles_w + tw) * length
            for a in range(6):  # tmp[a, :] = M[a, :] A
                o = 6 * a
                m0, m1, m2 = m[o, k:k + length], m[o + 1, k:k + length], m[o + 2, k:k + length]
                m3, m4, m5 = m[o + 3, k:k + length], m[o + 4, k:k + length], m[o + 5, k:k + length]
                f0, f1, f2, f3 = tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3]
                for l in range(length):
                    f0[l], f1[l], f2[l], f3[l] = _at(m0[l], m1[l], m2[l], m3[l], m4[l], m5[l], two, four, eight)
            r, s = 4 * th, 4 * tw
            for j in range(4):  # y[:, j] = A^T tmp[:, j]
                m0, m1, m2, m3, m4, m5 = tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j], tmp[5, j]
                f0, f1, f2, f3 = yt[r, s + j], yt[r + 1, s + j], yt[r + 2, s + j], yt[r + 3, s + j]
                for l in range(length):
                    f0[l], f1[l], f2[l], f3[l] = _at(m0[l], m1[l], m2[l], m3[l], m4[l], m5[l], two, four, eight)


@numba.njit(nogil=True, cache=True)
def output_adjoint(gt, r0, s0, length, tiles_h, tiles_w, z, tmp):
    """``z[a*6 + b, tile t] = (A dY_t A^T)[a, b]``, dY_t = ``gt[r0 + 4*th : r0 + 4*th + 4, s0 + 4*tw : ..., :L]``.

    The adjoint (transpose) of ``output_transform``; ``tmp`` is (6, 4, >= L) scratch.
    """
    two, four, eight = gt.dtype.type(2), gt.dtype.type(4), gt.dtype.type(8)
    for th in range(tiles_h):
        for tw in range(tiles_w):
            r, s = r0 + 4 * th, s0 + 4 * tw
            for j in range(4):  # tmp[:, j] = A dY[:, j]
                g0, g1, g2, g3 = gt[r, s + j], gt[r + 1, s + j], gt[r + 2, s + j], gt[r + 3, s + j]
                e0, e1, e2, e3, e4, e5 = tmp[0, j], tmp[1, j], tmp[2, j], tmp[3, j], tmp[4, j], tmp[5, j]
                for l in range(length):
                    e0[l], e1[l], e2[l], e3[l], e4[l], e5[l] = _a(g0[l], g1[l], g2[l], g3[l], two, four, eight)
            k = (th * tiles_w + tw) * length
            for a in range(6):  # z[a, :] = tmp[a, :] A^T
                g0, g1, g2, g3 = tmp[a, 0], tmp[a, 1], tmp[a, 2], tmp[a, 3]
                o = 6 * a
                e0, e1, e2 = z[o, k:k + length], z[o + 1, k:k + length], z[o + 2, k:k + length]
                e3, e4, e5 = z[o + 3, k:k + length], z[o + 4, k:k + length], z[o + 5, k:k + length]
                for l in range(length):
                    e0[l], e1[l], e2[l], e3[l], e4[l], e5[l] = _a(g0[l], g1[l], g2[l], g3[l], two, four, eight)


@numba.njit(cache=True)
def _padded(length):
    """Row length for a spatial array of vectors of ``length``: 16 more, so that neighbouring rows and
    columns never sit a multiple of 4 KB apart (such streams compete for one cache set)."""
    return length + 16


def _slots(bounds):
    """Threads a call uses (one scratch slot each): Numba's thread count, at most one per chunk."""
    return max(1, min(numba.get_num_threads(), len(bounds) - 1))


def _largest_chunk(bounds):
    return int(np.max(np.diff(bounds))) if len(bounds) > 1 else 0


def forward(x, bounds, ph, pw, u, bias, y, buffer, routines=None):
    """``y[n] = conv3x3(x[n]) + bias`` (stride 1, padding (ph, pw)) by F(4x4, 3x3), for bounds[0] <= n < bounds[-1].

    ``bounds``: int64 chunk boundaries (chunk i is images bounds[i] ... bounds[i+1] - 1); the chunks are
    spread over Numba's threads (``_forward_chunks``). ``u``: ``weight_transform(weight)``;
    ``buffer(name, shape)``: reusable scratch of the data's dtype; ``routines``: ``blas.routines()`` (the
    default) or ``blas.NO_BLAS``. The caller keeps the BLAS single-threaded meanwhile (each thread's GEMMs
    are its own).
    """
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    slots, nb = _slots(bounds), _largest_chunk(bounds)
    shapes = _forward_scratch(nb, x.shape[1], y.shape[1], *tiles(y.shape[2], y.shape[3]))
    names = ("wino_xt", "wino_v", "wino_m", "wino_yt", "wino_tmp6", "wino_tmp4")
    _forward_chunks(x, bounds, ph, pw, u, bias, y, blas.routines() if routines is None else routines,
                    *[buffer(name, (slots, math.prod(shape))) for name, shape in zip(names, shapes)])


@numba.njit(cache=True)
def _forward_scratch(nb, channels, out_channels, tiles_h, tiles_w):
    """The shapes of one chunk's scratch (``nb`` images): xt, v, m, yt, tmp6, tmp4 (see the layout above;
    v and m get one spare GEMM row per position)."""
    rows = tiles_h * tiles_w * nb + 1
    length_in, length_out = _padded(nb * channels), _padded(nb * out_channels)
    return ((4 * tiles_h + 2, 4 * tiles_w + 2, length_in), (36, rows, channels), (36, rows, out_channels),
            (4 * tiles_h, 4 * tiles_w, length_out), (6, 6, length_in), (6, 4, length_out))


@numba.njit(inline="always")
def _carve(memory, shape):
    """The first prod(shape) entries of flat ``memory`` as an array of ``shape``."""
    return memory[:shape[0] * shape[1] * shape[2]].reshape(shape)


@numba.njit(parallel=True, nogil=True, cache=True)
def _forward_chunks(x, bounds, ph, pw, u, bias, y, routines, xt, v, m, yt, tmp6, tmp4):
    """Chunk i on thread slot i % slots, each slot with its own scratch (row ``slot`` of each buffer):
    the threads write disjoint images of ``y``, so which thread runs which chunk changes nothing."""
    slots = xt.shape[0]
    for slot in numba.prange(slots):
        for i in range(slot, bounds.shape[0] - 1, slots):
            _forward_chunk(x, bounds[i], bounds[i + 1], ph, pw, u, bias, y, routines,
                           xt[slot], v[slot], m[slot], yt[slot], tmp6[slot], tmp4[slot])


@numba.njit(nogil=True, cache=True)
def _forward_chunk(x, n0, n1, ph, pw, u, bias, y, routines, xt_memory, v_memory, m_memory, yt_memory,
                   tmp6_memory, tmp4_memory):
    """One chunk's stages: V = B^T d B, M = V U (36 GEMMs), y = A^T M A + bias (scratch: flat memory)."""
    nb, channels, out_channels = n1 - n0, x.shape[1], y.shape[1]
    tiles_h, tiles_w = tiles(y.shape[2], y.shape[3])
    rows = tiles_h * tiles_w * nb
    xt_shape, v_shape, m_shape, yt_shape, tmp6_shape, tmp4_shape = _forward_scratch(nb, channels, out_channels,
                                                                                    tiles_h, tiles_w)
    xt, v, m = _carve(xt_memory, xt_shape), _carve(v_memory, v_shape), _carve(m_memory, m_shape)
    yt, tmp6, tmp4 = _carve(yt_memory, yt_shape), _carve(tmp6_memory, tmp6_shape), _carve(tmp4_memory, tmp4_shape)
    nchw_to_hwl(x, n0, n1, ph, pw, xt)
    input_transform(xt, nb * channels, tiles_h, tiles_w, v.reshape(36, -1), tmp6)
    for p in range(36):
        blas.gemm(routines, False, v[p, :rows], u[p], m[p, :rows])
    output_transform(m.reshape(36, -1), nb * out_channels, tiles_h, tiles_w, yt, tmp4)
    hwl_to_nchw(yt, 0, 0, bias, n0, n1, y)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _plane_sum(plane):
    """sum over r, s of plane[r, s], in float64 ("reassoc" lets the sum vectorise: the same every run)."""
    total = 0.0
    for r in range(plane.shape[0]):
        for s in range(plane.shape[1]):
            total += np.float64(plane[r, s])
    return total


def backward(x, grad_output, bounds, ph, pw, u, u_flip, grad_input, grad_u, grad_bias, buffer, routines=None):
    """``grad_input[n]`` for bounds[0] <= n < bounds[-1], and per chunk i (images bounds[i] ... bounds[i+1] - 1)
    its ``grad_u[i]`` (36, C_in, C_out) and ``grad_bias[i]`` (C_out,) (``grad_bias[i, k]`` = sum of dY[n, k]
    over the chunk's images and pixels; a ``grad_bias`` of shape (chunks, 0), for a layer without bias,
    skips that sum). All three are overwritten.

    ``u_flip``: ``weight_transform`` of the flipped kernel with its channel axes swapped. dU is the Winograd
    form of dW (``weight_grad`` turns the chunks' dU into dW); dx is the forward algorithm run on dY, padded
    by (2 - ph, 2 - pw), with ``u_flip``: the textbook dx = full correlation of dY with the flipped kernel.
    Threads, ``buffer`` and ``routines`` as in ``forward``.
    """
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    slots, nb = _slots(bounds), _largest_chunk(bounds)
    shapes = _backward_scratch(nb, x.shape[1], grad_output.shape[1], x.shape[2], x.shape[3],
                               *tiles(grad_output.shape[2], grad_output.shape[3]), ph, pw)
    names = ("wino_xt", "wino_gt", "wino_v", "wino_m", "wino_dxt", "wino_tmp6", "wino_tmp4")
    _backward_chunks(x, grad_output, bounds, ph, pw, u, u_flip, grad_input, grad_u, grad_bias,
                     blas.routines() if routines is None else routines,
                     *[buffer(name, (slots, math.prod(shape))) for name, shape in zip(names, shapes)])


@numba.njit(cache=True)
def _backward_scratch(nb, channels, out_channels, height, width, tiles_h, tiles_w, ph, pw):
    """The shapes of one chunk's scratch in backward: xt (x), gt (dY padded by (2 - ph, 2 - pw)), the
    memory of V / V_g and of Z / M (each big enough for either), dxt, tmp6, tmp4. ``tiles_h``, ``tiles_w``:
    the tiles of dY."""
    dx_tiles_h, dx_tiles_w = tiles(height, width)
    rows = max(tiles_h * tiles_w, dx_tiles_h * dx_tiles_w) * nb + 1
    widest, longest = max(channels, out_channels), _padded(nb * max(channels, out_channels))
    return ((4 * tiles_h + 2, 4 * tiles_w + 2, _padded(nb * channels)),
            (max(4 * dx_tiles_h + 2, 2 - ph + 4 * tiles_h), max(4 * dx_tiles_w + 2, 2 - pw + 4 * tiles_w),
             _padded(nb * out_channels)),
            (36, rows, widest), (36, rows, widest),
            (4 * dx_tiles_h, 4 * dx_tiles_w, _padded(nb * channels)), (6, 6, longest), (6, 4, longest))


@numba.njit(parallel=True, nogil=True, cache=True)
def _backward_chunks(x, grad_output, bounds, ph, pw, u, u_flip, grad_input, grad_u, grad_bias, routines,
                     xt, gt, v, z, dxt, tmp6, tmp4):
    """Chunk i on thread slot i % slots with the slot's scratch, as ``_forward_chunks``; chunk i writes its
    own images of ``grad_input`` and its own ``grad_u[i]``, ``grad_bias[i]``."""
    slots = xt.shape[0]
    for slot in numba.prange(slots):
        for i in range(slot, bounds.shape[0] - 1, slots):
            _backward_chunk(x, grad_output, bounds[i], bounds[i + 1], ph, pw, u, u_flip, grad_input, grad_u[i],
                            grad_bias[i], routines, xt[slot], gt[slot], v[slot], z[slot], dxt[slot], tmp6[slot],
                            tmp4[slot])


@numba.njit(nogil=True, cache=True)
def _backward_chunk(x, grad_output, n0, n1, ph, pw, u, u_flip, grad_input, grad_u, grad_bias, routines,
                    xt_memory, gt_memory, v_memory, z_memory, dxt_memory, tmp6_memory, tmp4_memory):
    """One chunk's stages (scratch: flat memory). ``v_memory``, ``z_memory`` hold V and Z, then (once they
    are used up) V_g and M of the dx pass."""
    for k in range(grad_bias.shape[0]):  # db = sum of dY over images and pixels (float64 sums)
        total = 0.0
        for n in range(n0, n1):
            total += _plane_sum(grad_output[n, k])
        grad_bias[k] = total
    nb, channels, out_channels = n1 - n0, x.shape[1], grad_output.shape[1]
    height, width = x.shape[2], x.shape[3]
    tiles_h, tiles_w = tiles(grad_output.shape[2], grad_output.shape[3])
    dx_tiles_h, dx_tiles_w = tiles(height, width)
    rows, dx_rows = tiles_h * tiles_w * nb, dx_tiles_h * dx_tiles_w * nb
    length_in, length_out = nb * channels, nb * out_channels
    qh, qw = 2 - ph, 2 - pw
    xt_shape, gt_shape, _, _, dxt_shape, tmp6_shape, tmp4_shape = _backward_scratch(
        nb, channels, out_channels, height, width, tiles_h, tiles_w, ph, pw)
    xt, gt, dxt = _carve(xt_memory, xt_shape), _carve(gt_memory, gt_shape), _carve(dxt_memory, dxt_shape)
    tmp6, tmp4 = _carve(tmp6_memory, tmp6_shape), _carve(tmp4_memory, tmp4_shape)
    # V = B^T x B, as in forward
    nchw_to_hwl(x, n0, n1, ph, pw, xt)
    v = v_memory[:36 * (rows + 1) * channels].reshape(36, rows + 1, channels)
    input_transform(xt, length_in, tiles_h, tiles_w, v.reshape(36, -1), tmp6)
    # dY, zero-padded by (2 - ph, 2 - pw) for the dx correlation; Z = A dY A^T reads it at that offset
    nchw_to_hwl(grad_output, n0, n1, qh, qw, gt)
    z = z_memory[:36 * (rows + 1) * out_channels].reshape(36, rows + 1, out_channels)
    output_adjoint(gt, qh, qw, length_out, tiles_h, tiles_w, z.reshape(36, -1), tmp4)
    for p in range(36):  # dU = V^T Z per position
        blas.gemm(routines, True, v[p, :rows], z[p, :rows], grad_u[p])
    # dx: V_g = B^T dY_pad B, M = V_g U_flip, dx = A^T M A (V and Z are used up: their memory is reused)
    v_g = v_memory[:36 * (dx_rows + 1) * out_channels].reshape(36, dx_rows + 1, out_channels)
    input_transform(gt, length_out, dx_tiles_h, dx_tiles_w, v_g.reshape(36, -1), tmp6)
    m = z_memory[:36 * (dx_rows + 1) * channels].reshape(36, dx_rows + 1, channels)
    for p in range(36):
        blas.gemm(routines, False, v_g[p, :dx_rows], u_flip[p], m[p, :dx_rows])
    output_transform(m.reshape(36, -1), length_in, dx_tiles_h, dx_tiles_w, dxt, tmp4)
    hwl_to_nchw(dxt, 0, 0, np.zeros(channels, x.dtype), n0, n1, grad_input)
