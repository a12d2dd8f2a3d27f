"""Build a PyTorch copy of a minigrad model (same layers, same weights), for speed and parity checks.

Only used by benchmarks and opt-in tests; minigrad never imports torch.
"""
import numpy as np


def to_torch(module):
    """A ``torch.nn.Module`` computing what ``module`` computes, with its parameters and buffers copied."""
    import torch
    from torch import nn as tnn

    from minigrad import nn

    def tensor(array):
        return torch.from_numpy(np.array(array, order="C", copy=True))  # ascontiguousarray would make 0-d 1-d

    def convert(m):
        if isinstance(m, nn.Residual):
            return _TorchResidual(m, convert)
        if isinstance(m, nn.Sequential):
            return tnn.Sequential(*[convert(child) for child in m])
        if isinstance(m, nn.Conv2d):
            t = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                           bias=m.bias is not None)
        elif isinstance(m, nn.Linear):
            t = tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            t = tnn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum)
        elif isinstance(m, nn.LeakyReLU):
            return tnn.LeakyReLU(m.negative_slope)
        elif isinstance(m, nn.ReLU):
            return tnn.ReLU()
        elif isinstance(m, nn.AvgPool2d):
            return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding)
        elif isinstance(m, nn.MaxPool2d):
            return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            return tnn.AdaptiveAvgPool2d(m.output_size)
        elif isinstance(m, nn.Flatten):
            return tnn.Flatten()
        else:
            raise TypeError(f"to_torch: no PyTorch counterpart for {type(m).__name__}")
        with torch.no_grad():
            for name, array in m.state_dict().items():
                target = getattr(t, name)
                target.copy_(tensor(array).to(target.dtype))
        return t

    return convert(module)


def _TorchResidual(block, convert):
    """A PyTorch module for an ``nn.Residual``: ``act(branch(x) + shortcut(x))`` (identity shortcut: ``+ x``)."""
    from torch import nn as tnn

    class TorchResidual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.branch = tnn.Sequential(*[convert(layer) for layer in block.branch])
            self.shortcut = tnn.Identity() if block.shortcut is None else convert(block.shortcut)
            self.act = tnn.Identity() if block.act is None else convert(block.act)

        def forward(self, x):
            return self.act(self.branch(x) + self.shortcut(x))

    return TorchResidual()
