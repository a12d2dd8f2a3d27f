"""Reusable Hypothesis strategies for layer geometry: batch, channels, non-square images and kernels,
strides and paddings per axis, always giving a non-empty output.

    from strategies import conv_geometry, pool_geometry, seeds      # tests/ is on sys.path under pytest
    @given(g=conv_geometry(), seed=seeds)
    def test_x(g, seed): x = np.random.default_rng(seed).standard_normal(g.input_shape)

Every pair is (height, width); the two entries are drawn independently, so non-square cases (where a
kh/kw mix-up shows) come up in most examples.
"""
from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = ["Geometry", "conv_geometry", "pool_geometry", "pairs", "seeds", "output_size"]

seeds = st.integers(0, 2**32 - 1)


def output_size(size, kernel, stride, padding, ceil_mode=False):
    """PyTorch's output size: floor (or ceil, dropping a window that starts in the right padding)."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1 if ceil_mode else (size + 2 * padding - kernel) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class Geometry:
    """One layer's geometry; ``input_shape`` is NCHW and ``output_shape`` follows PyTorch's rule."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple
    stride: tuple
    padding: tuple
    ceil_mode: bool = False

    @property
    def input_shape(self):
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def output_hw(self):
        return tuple(output_size(size, k, s, p, self.ceil_mode)
                     for size, k, s, p in zip((self.height, self.width), self.kernel, self.stride, self.padding))

    @property
    def output_shape(self):
        return (self.batch, self.out_channels) + self.output_hw


def pairs(low, high):
    """An (h, w) pair of ints in [low, high], drawn independently."""
    return st.tuples(st.integers(low, high), st.integers(low, high))


@st.composite
def conv_geometry(draw, max_batch=3, max_channels=4, max_size=9, max_kernel=4, max_stride=3, max_padding=2):
    """Geometry of a Conv2d: any padding up to ``max_padding``, image at least as large as the kernel
    minus the padding (so the output is never empty)."""
    kernel = draw(pairs(1, max_kernel))
    stride = draw(pairs(1, max_stride))
    padding = draw(pairs(0, max_padding))
    height, width = (draw(st.integers(max(1, k - 2 * p), max_size)) for k, p in zip(kernel, padding))
    return Geometry(draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
                    draw(st.integers(1, max_channels)), height, width, kernel, stride, padding)


@st.composite
def pool_geometry(draw, max_batch=3, max_channels=3, max_size=9, max_kernel=4, max_stride=3, ceil_mode=None):
    """Geometry of a pooling layer: padding at most half the kernel (PyTorch's rule), stride drawn
    separately (``None`` stands for 'the kernel' in layers; here it is explicit), optional ceil_mode."""
    kernel = draw(pairs(1, max_kernel))
    stride = draw(pairs(1, max_stride))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    ceil = draw(st.booleans()) if ceil_mode is None else ceil_mode
    height, width = (draw(st.integers(max(1, k - 2 * p), max_size)) for k, p in zip(kernel, padding))
    channels = draw(st.integers(1, max_channels))
    return Geometry(draw(st.integers(1, max_batch)), channels, channels, height, width, kernel, stride, padding, ceil)
