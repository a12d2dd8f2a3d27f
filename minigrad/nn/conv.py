"""2-D convolution, as ``torch.nn.Conv2d`` (groups=1, dilation=1).

The maths is written here once, as im2col + GEMM (forward) and its transpose (backward); the index
shuffling (im2col, col2im) is in ``minigrad/kernels/im2col.py``. The batch is processed in chunks of a
few images, spread over the worker threads (``minigrad.threads.parallel_chunks``): a chunk's column
matrix stays in its core's cache, and it is rebuilt in backward instead of being kept, so memory stays
at one input per layer.

Fast path: a 3x3 convolution with stride 1, padding <= 2 and at least ``WINOGRAD_MIN_CHANNELS`` input and
output channels (every convolution of the VGG and ResNet blocks) runs Winograd's F(4x4, 3x3) algorithm
(``minigrad/kernels/winograd.py``): the same function with 4x fewer multiplications, equal to this file's
formulas up to float rounding (the tests compare the two). ``Conv2d.winograd = False`` turns it off.
Its chunks run in one parallel Numba loop (about 20 us per hand-off, against 120-175 us for the
Python worker pool: at 8x8 and 4x4 maps the pool's hand-off was a large part of the layer's time).
"""
import math
import threading

import numba
import numpy as np

from ..kernels import im2col as K
from ..kernels import winograd
from ..threads import parallel_chunks, single_threaded_blas
from . import init
from .module import Module, Parameter

__all__ = ["Conv2d"]

# Columns (images x output pixels) per GEMM. Enough for the BLAS to run at full speed, few enough that a
# chunk's column matrix (C_in*kh*kw x this) stays in cache. Below _MIN_CHUNK_COLUMNS a chunk is not worth
# a thread hand-off (gradient checks and other tiny inputs run in one chunk).
_CHUNK_COLUMNS = 2048
_MIN_CHUNK_COLUMNS = 256
# Winograd: GEMM rows (images x 4x4 tiles) per chunk, and the smallest channel counts it is used for
# (below, the transforms cost more than the multiplications they save).
_WINOGRAD_CHUNK_TILES = 128
WINOGRAD_MIN_CHANNELS = 8
_scratch = threading.local()  # per worker thread: each needs its own buffers


def _buffer(name, shape, dtype):
    """A reusable scratch array of ``shape`` for this thread (grown on demand, shared by all layers)."""
    size = math.prod(shape)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _channel_sums(g):
    """``db[o] = sum over images n and pixels p of dY[n, o, p]`` for a chunk ``g`` of dY: a product with
    a vector of ones (the BLAS's GEMV took half the time of NumPy's sum over those axes)."""
    images = g.reshape(g.shape[0], g.shape[1], -1)
    return np.matmul(images, np.ones(images.shape[2], g.dtype)).sum(axis=0)


def _pair(value, name, minimum):
    """``value`` as an (h, w) pair of ints >= ``minimum`` (an int means the same for both)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or \
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"Conv2d: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"Conv2d: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


class Conv2d(Module):
    r"""2-D cross-correlation over NCHW input, as ``torch.nn.Conv2d`` (groups=1, dilation=1).

    Forward   y = W_mat @ im2col(x) + b                  W_mat = weight.reshape(C_out, C_in*kh*kw)
              y[n, o, h, w] = b[o] + sum_{c,i,j} weight[o, c, i, j] * x_pad[n, c, h*sh + i, w*sw + j]
    Backward  dW = dY @ cols.T,  db = sum_{n,h,w} dY,  dx = col2im(W_mat.T @ dY)
              (dY: grad_output as (C_out, N*H_out*W_out), cols = im2col(x): (C_in*kh*kw, N*H_out*W_out))
              With stride 1 (and C_out <= 2*C_in) the same gradients come from im2col(dY) (see backward).
    Shapes    x (N, C_in, H, W) -> y (N, C_out, H_out, W_out),
              H_out = floor((H + 2*ph - kh) / sh) + 1,  W_out = floor((W + 2*pw - kw) / sw) + 1
              weight (C_out, C_in, kh, kw), bias (C_out,)
    Init      weight, bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in*kh*kw (PyTorch's default).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        # PyTorch's signature, so that positional arguments mean the same; only these values are supported.
        if dilation not in (1, (1, 1)) or groups != 1 or padding_mode != "zeros":
            raise ValueError(f"Conv2d: only dilation=1, groups=1 and padding_mode='zeros' are supported, got "
                             f"dilation={dilation!r}, groups={groups!r}, padding_mode={padding_mode!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Conv2d: {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels) + self.kernel_size, np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """PyTorch's default: ``kaiming_uniform_(weight, a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        then bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); drawn in that order from ``generator`` (default: the
        global one, ``minigrad.random.default_generator()``)."""
        init.default_init_(self.weight, self.bias, generator=generator)

    def _geometry(self, x):
        """``(H_out, W_out)`` for input ``x``; an error if the output would be empty."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        h_out = K.output_size(x.shape[2], kh, sh, ph)
        w_out = K.output_size(x.shape[3], kw, sw, pw)
        if h_out < 1 or w_out < 1:
            raise ValueError(
                f"{self._display_name()}: input of shape {x.shape} with padding {self.padding} is smaller than "
                f"kernel_size {self.kernel_size}: the output size would be ({h_out}, {w_out})")
        return h_out, w_out

    @staticmethod
    def _chunks(batch, per_image, target=_CHUNK_COLUMNS, minimum=_MIN_CHUNK_COLUMNS):
        """Slices ``(n0, n1)`` of the batch: about ``target`` columns each (``per_image`` per image), one per
        worker thread at least when the batch is small, never fewer than ``minimum`` columns.

        The last few chunks are cut in half: threads take chunks as they become free, so the one that
        takes the last chunk keeps the others waiting for that chunk's length at most.
        """
        threads = numba.get_num_threads()
        step = max(1, min(target // per_image, -(-batch // threads)), -(-minimum // per_image))
        chunks = [(n0, min(n0 + step, batch)) for n0 in range(0, batch, step)]
        if threads > 1 and len(chunks) > threads and step > 1 and (step // 2) * per_image >= minimum:
            tail, chunks = chunks[-threads:], chunks[:-threads]
            for n0, n1 in tail:
                middle = n0 + (n1 - n0 + 1) // 2
                chunks += [(n0, middle), (middle, n1)] if n1 - n0 > 1 else [(n0, n1)]
        return chunks

    def _uses_winograd(self):
        return self.winograd and self.kernel_size == (3, 3) and self.stride == (1, 1) and \
            max(self.padding) <= 2 and min(self.in_channels, self.out_channels) >= WINOGRAD_MIN_CHANNELS

    winograd = True  # the F(4x4, 3x3) fast path where it applies (see the module docstring)

    def forward(self, x):
        x = self._check_input(x, ndim=4, channels=self.in_channels)
        h_out, w_out = self._geometry(x)
        dtype = self._compute_dtype(x)
        if dtype not in (np.float32, np.float64):  # the kernels' two compiled signatures
            raise TypeError(f"{self._display_name()}: computes in float32 or float64, but input {x.dtype} and "
                            f"weight {self.weight.dtype} give {dtype}")
        x = np.ascontiguousarray(x, dtype=dtype)  # a copy only when needed; the caller's x is never written
        self.save_for_backward(x=x)  # backward rebuilds the columns from x, chunk by chunk
        bias = np.zeros(self.out_channels, dtype) if self.bias is None else self.bias.data.astype(dtype)
        y = np.empty((x.shape[0], self.out_channels, h_out, w_out), dtype)
        if self._uses_winograd():
            return self._winograd_forward(x, bias, y)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        w_mat = self.weight.data.reshape(self.out_channels, -1).astype(dtype, copy=False)

        def chunk(n0, n1, _):  # y[n] = W_mat @ im2col(x[n]) + b for n0 <= n < n1
            pixels = h_out * w_out
            cols = _buffer("cols", (w_mat.shape[1], (n1 - n0) * pixels), dtype)
            K.im2col(x, n0, n1, kh, kw, sh, sw, ph, pw, h_out, w_out, cols)
            # One GEMM per image, each written straight into its (C_out, H_out*W_out) block of y (NCHW):
            # no second pass to move a (C_out, images*pixels) product into place.
            y_chunk = y[n0:n1].reshape(n1 - n0, self.out_channels, pixels)
            np.matmul(w_mat, cols.reshape(-1, n1 - n0, pixels).transpose(1, 0, 2), out=y_chunk)
            y_chunk += bias[:, None]

        parallel_chunks(chunk, self._chunks(x.shape[0], h_out * w_out))
        return y

    def backward(self, grad_output):
        x = self.saved.x
        g = np.ascontiguousarray(grad_output, dtype=x.dtype)
        if getattr(self.saved, "u", None) is not None:  # the forward took the Winograd path
            return self._winograd_backward(x, g)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (height, width), (h_out, w_out) = x.shape[2:], g.shape[2:]
        grad_input = np.empty_like(x)
        if self.stride == (1, 1) and self.out_channels <= 2 * self.in_channels:
            # Both gradients from one column matrix of dY, and no scatter-add (one im2col fewer):
            # g_cols = im2col(dY, padding=(kh-1-ph, kw-1-pw)) lists, for each input pixel, the output pixels
            # whose windows covered it, kernel flipped. So dx = W_flip @ g_cols (a full correlation with
            # W_flip[c, (o*kh + i)*kw + j] = weight[o, c, kh-1-i, kw-1-j]), and dW_flip = x_rows @ g_cols.T
            # (x_rows: x as (C_in, N*H*W)) is dW with its kernel flipped and its first two axes swapped.
            # im2col(dY) has C_out*kh*kw rows against 2*C_in*kh*kw for im2col(x) + col2im: hence the test
            # on the channels (a 3-channel input layer takes the textbook way).
            w_flip = np.ascontiguousarray(self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), x.dtype)
            w_flip = w_flip.reshape(self.in_channels, -1)
            no_bias = np.zeros(self.in_channels, x.dtype)

            def chunk(n0, n1, partial):  # partial: this chunk's sums of dW_flip and db
                g_cols = _buffer("cols", (w_flip.shape[1], (n1 - n0) * height * width), x.dtype)
                K.im2col(g, n0, n1, kh, kw, 1, 1, kh - 1 - ph, kw - 1 - pw, height, width, g_cols)
                x_rows = _buffer("rows", (self.in_channels, g_cols.shape[1]), x.dtype)
                K.nchw_to_rows(x, n0, n1, x_rows)
                partial[0] += x_rows @ g_cols.T
                if self.bias is not None:
                    partial[1] += _channel_sums(g[n0:n1])
                dx_rows = np.matmul(w_flip, g_cols, out=x_rows)  # x_rows are used up: reuse their memory
                K.rows_to_nchw(dx_rows, no_bias, n0, n1, grad_input)

            partials = parallel_chunks(chunk, self._chunks(x.shape[0], height * width),
                                       make_state=lambda: [np.zeros_like(w_flip), np.zeros(self.out_channels, x.dtype)])
            grad_flip = sum(p[0] for p in partials).reshape(self.in_channels, self.out_channels, kh, kw)
            self.weight.grad += grad_flip[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        else:
            # The textbook backward, chunk by chunk: dW += dY @ cols.T, dx = col2im(W_mat.T @ dY).
            w_mat = self.weight.data.reshape(self.out_channels, -1).astype(x.dtype, copy=False)

            def chunk(n0, n1, partial):  # partial: this chunk's sums of dW and db
                pixels = h_out * w_out
                cols = _buffer("cols", (w_mat.shape[1], (n1 - n0) * pixels), x.dtype)
                K.im2col(x, n0, n1, kh, kw, sh, sw, ph, pw, h_out, w_out, cols)  # rebuilt, not kept
                # Per image (GEMMs batched over the chunk's images, dY read in place as NCHW):
                # dW += dY[n] @ cols[n].T and d_cols[n] = W_mat.T @ dY[n], with dY[n] of shape (C_out, pixels).
                g_images = g[n0:n1].reshape(n1 - n0, self.out_channels, pixels)
                cols_images = cols.reshape(-1, n1 - n0, pixels).transpose(1, 0, 2)
                partial[0] += np.matmul(g_images, cols_images.transpose(0, 2, 1)).sum(axis=0)
                if self.bias is not None:
                    partial[1] += _channel_sums(g_images)
                np.matmul(w_mat.T, g_images, out=cols_images)  # cols are used up: reuse their memory
                K.col2im(cols, n0, n1, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_input)

            partials = parallel_chunks(chunk, self._chunks(x.shape[0], h_out * w_out),
                                       make_state=lambda: [np.zeros_like(w_mat), np.zeros(self.out_channels, x.dtype)])
            self.weight.grad += sum(p[0] for p in partials).reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += sum(p[1] for p in partials)
        return grad_input

    # ------------------------------------------------------------------ the Winograd fast path
    def _winograd_bounds(self, x):
        """Chunk boundaries for the Winograd kernels: about ``_WINOGRAD_CHUNK_TILES`` GEMM rows (images x
        tiles) per chunk, as many chunks as threads at least (a multiple of them), images spread evenly."""
        tiles_h, tiles_w = winograd.tiles(x.shape[2] + 2 * self.padding[0] - 2, x.shape[3] + 2 * self.padding[1] - 2)
        batch, threads = x.shape[0], numba.get_num_threads()
        chunks = -(-batch * tiles_h * tiles_w // _WINOGRAD_CHUNK_TILES)
        chunks = min(batch, -(-chunks // threads) * threads)
        return np.arange(chunks + 1, dtype=np.int64) * batch // chunks

    def _winograd_forward(self, x, bias, y):
        """``y`` = this layer's output by F(4x4, 3x3) (``kernels/winograd.py``: the maths is there)."""
        u = winograd.weight_transform(self.weight.data, x.dtype)
        self.save_for_backward(x=x, u=u)
        with single_threaded_blas():  # the kernel's threads each run their own GEMMs
            winograd.forward(x, self._winograd_bounds(x), *self.padding, u, bias, y,
                             lambda name, shape: _buffer(name, shape, x.dtype))
        return y

    def _winograd_backward(self, x, g):
        """The gradients of ``_winograd_forward`` (``kernels/winograd.py``: the maths is there)."""
        u, dtype = self.saved.u, x.dtype
        u_flip = winograd.weight_transform(self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype)
        grad_input = np.empty_like(x)
        bounds = self._winograd_bounds(x)
        grad_u = np.empty((len(bounds) - 1,) + u.shape, dtype)  # each chunk's dU (Winograd form of dW)
        grad_bias = np.empty((len(bounds) - 1, 0 if self.bias is None else self.out_channels), dtype)  # each chunk's db
        with single_threaded_blas():
            winograd.backward(x, g, bounds, *self.padding, u, u_flip, grad_input, grad_u, grad_bias,
                              lambda name, shape: _buffer(name, shape, dtype))
        # Summed in chunk order (whichever thread computed which), in float64: the same every run.
        self.weight.grad += winograd.weight_grad(grad_u)
        if self.bias is not None:
            self.bias.grad += grad_bias.sum(axis=0)
        return grad_input

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        return text + ("" if self.bias is not None else ", bias=False")
