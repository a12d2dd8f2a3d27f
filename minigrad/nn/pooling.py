"""2-D pooling over NCHW input, as ``torch.nn.MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d``.

The window loops are Numba kernels in ``minigrad/kernels/pooling.py``.
"""
import numpy as np

from ..kernels import pooling as K
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


def _pair(layer, name, value, minimum):
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


def _kernel_dtype(x):
    """float32 or float64, the kernels' two signatures (float16 computes in float32)."""
    dtype = np.promote_types(x.dtype, np.float32)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"pooling supports float16/32/64 input, got {x.dtype}")
    return dtype


class _Pool2d(Module):
    """Shared geometry of MaxPool2d and AvgPool2d: window, stride (default: the window), padding, ceil_mode.

    ``kernel_size``, ``stride``, ``padding`` are kept as given (as PyTorch); ``kernel_hw`` (kh, kw),
    ``stride_hw`` (sh, sw) and ``padding_hw`` (ph, pw) are the same as pairs of ints.
    H_out = floor((H + 2*ph - kh) / sh) + 1 (ceil instead of floor with ceil_mode, as PyTorch, dropping a
    last window that would start in the right padding); the same for W.
    """

    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__()
        name = type(self).__name__
        self.kernel_size, self.stride, self.padding = kernel_size, kernel_size if stride is None else stride, padding
        self.ceil_mode = bool(ceil_mode)
        self.kernel_hw = _pair(name, "kernel_size", kernel_size, 1)
        self.stride_hw = _pair(name, "stride", self.stride, 1)
        self.padding_hw = _pair(name, "padding", padding, 0)
        if any(p > k // 2 for p, k in zip(self.padding_hw, self.kernel_hw)):
            raise ValueError(f"{name}: padding should be at most half of kernel_size, got padding={padding} "
                             f"and kernel_size={kernel_size}")

    def _output_size(self, x):
        sizes = []
        for size, k, s, p in zip(x.shape[2:], self.kernel_hw, self.stride_hw, self.padding_hw):
            out = (size + 2 * p - k + (s - 1 if self.ceil_mode else 0)) // s + 1
            if self.ceil_mode and (out - 1) * s >= size + p:
                out -= 1
            sizes.append(out)
        if min(sizes) < 1:
            raise ValueError(f"{self._display_name()}: input of spatial size {x.shape[2:]} is too small for "
                             f"kernel_size={self.kernel_size}, padding={self.padding}: output size {tuple(sizes)}")
        return tuple(sizes)

    def _prepare(self, x):
        """Checked, contiguous input in the compute dtype, and the output shape."""
        x = self._check_input(x, ndim=4)
        x = np.ascontiguousarray(x, dtype=_kernel_dtype(x))
        return x, x.shape[:2] + self._output_size(x)


class MaxPool2d(_Pool2d):
    r"""Maximum over each window, as ``torch.nn.MaxPool2d`` (dilation 1, indices not returned).

    Forward   y[n,c,h,w] = max_{i<kh, j<kw} x_pad[n, c, h*sh + i, w*sw + j]     (x_pad: -inf padding)
    Backward  dx[n,c,r,s] = sum of dY[n,c,h,w] over the windows whose argmax is (r, s); first maximum in
              row-major order on ties (PyTorch's choice), so exactly one input pixel per window gets it
    Shapes    x (N, C, H, W) -> y (N, C, H_out, W_out); see ``_Pool2d`` for H_out
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if dilation not in (1, (1, 1)) or return_indices:
            raise ValueError("MaxPool2d: only dilation=1 and return_indices=False are supported")
        self.dilation = dilation

    def forward(self, x):
        x, shape = self._prepare(x)
        y = np.empty(shape, x.dtype)
        argmax = np.empty(shape, np.int32)  # flat index r*W + s of each window's maximum
        K.max_pool_forward(x, *self.kernel_hw, *self.stride_hw, *self.padding_hw, y, argmax)
        self.save_for_backward(argmax=argmax, input_shape=x.shape, dtype=x.dtype)
        return y

    def backward(self, grad_output):
        saved = self.saved
        g = np.ascontiguousarray(grad_output, dtype=saved.dtype)
        grad_input = np.empty(saved.input_shape, saved.dtype)
        K.max_pool_backward(g, saved.argmax, grad_input)
        return grad_input

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    r"""Mean over each window, as ``torch.nn.AvgPool2d``.

    Forward   y[n,c,h,w] = (1/d) * sum_{i<kh, j<kw} x_pad[n, c, h*sh + i, w*sw + j]     (zero padding)
              d = divisor_override if given; else kh*kw if count_include_pad (the padded window's area;
              smaller only where ceil_mode lets a window pass the padding); else the real pixels in it
              (``kernels.pooling.avg_pool_divisor``)
    Backward  dx[n,c,r,s] = sum over the windows containing (r, s) of dY[n,c,h,w] / d
    Shapes    x (N, C, H, W) -> y (N, C, H_out, W_out); see ``_Pool2d`` for H_out
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer))
                                             or isinstance(divisor_override, bool) or divisor_override < 1):
            raise ValueError(f"AvgPool2d: divisor_override must be a positive int or None, got {divisor_override!r}")
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def _args(self):
        return (*self.kernel_hw, *self.stride_hw, *self.padding_hw, self.count_include_pad,
                int(self.divisor_override or 0))

    def forward(self, x):
        x, shape = self._prepare(x)
        y = np.empty(shape, x.dtype)
        K.avg_pool_forward(x, *self._args(), y)
        self.save_for_backward(input_shape=x.shape, dtype=x.dtype)
        return y

    def backward(self, grad_output):
        saved = self.saved
        g = np.ascontiguousarray(grad_output, dtype=saved.dtype)
        grad_input = np.empty(saved.input_shape, saved.dtype)
        K.avg_pool_backward(g, *self._args(), grad_input)
        return grad_input

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    r"""Mean over an adaptive grid of windows giving a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``.

    Forward   y[n,c,i,j] = mean of x[n, c, r0(i):r1(i), s0(j):s1(j)],
              r0(i) = floor(i*H/H_out), r1(i) = ceil((i+1)*H/H_out)  (same for columns with W, W_out)
              output_size 1 is global average pooling: y[n,c,0,0] = mean_{r,s} x[n,c,r,s]
    Backward  every pixel of window (i, j) receives dY[n,c,i,j] / (window area); overlaps add up
    Shapes    x (N, C, H, W) -> y (N, C, H_out, W_out); output_size int, pair, or None in a pair (keep)
    """

    def __init__(self, output_size):
        super().__init__()
        single = output_size is None or isinstance(output_size, (int, np.integer))
        pair = (output_size, output_size) if single else output_size
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
                v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1) for v in pair):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be a positive int or a pair of positive "
                             f"ints/None, got {output_size!r}")
        self.output_size = output_size
        self._size = tuple(pair)

    @staticmethod
    def _windows(size, out):
        return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

    def forward(self, x):
        x = self._check_input(x, ndim=4)
        x = np.asarray(x, dtype=_kernel_dtype(x))
        h_out, w_out = (s if s is not None else x.shape[2 + k] for k, s in enumerate(self._size))
        rows, cols = self._windows(x.shape[2], h_out), self._windows(x.shape[3], w_out)
        self.save_for_backward(input_shape=x.shape, dtype=x.dtype, rows=rows, cols=cols)
        if (h_out, w_out) == (1, 1):  # global average pooling: one mean per plane (a Numba kernel)
            y = np.empty(x.shape[:2] + (1, 1), x.dtype)
            planes = x.shape[0] * x.shape[1]
            K.global_avg_pool_forward(np.ascontiguousarray(x).reshape(planes, x.shape[2] * x.shape[3]),
                                      y.reshape(planes))
            return y
        y = np.empty(x.shape[:2] + (h_out, w_out), x.dtype)
        for i, (r0, r1) in enumerate(rows):
            for j, (s0, s1) in enumerate(cols):
                y[:, :, i, j] = x[:, :, r0:r1, s0:s1].mean(axis=(2, 3))
        return y

    def backward(self, grad_output):
        saved = self.saved
        g = np.asarray(grad_output, dtype=saved.dtype)
        height, width = saved.input_shape[2:]
        if g.shape[2:] == (1, 1):  # dx = g / (H*W) over each plane
            grad_input = np.empty(saved.input_shape, saved.dtype)
            planes = g.shape[0] * g.shape[1]
            K.global_avg_pool_backward(np.ascontiguousarray(g).reshape(planes), grad_input.reshape(planes, height * width))
            return grad_input
        grad_input = np.zeros(saved.input_shape, saved.dtype)
        for i, (r0, r1) in enumerate(saved.rows):
            for j, (s0, s1) in enumerate(saved.cols):
                grad_input[:, :, r0:r1, s0:s1] += g[:, :, i:i + 1, j:j + 1] / ((r1 - r0) * (s1 - s0))
        return grad_input

    def extra_repr(self):
        return f"output_size={self.output_size}"
