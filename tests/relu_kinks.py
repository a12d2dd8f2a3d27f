"""Gradient checks through ReLUs: finite differences across a kink are wrong by design, so the tests
choose inputs that keep every ReLU input away from 0."""
import copy

import numpy as np
import pytest

from minigrad import nn

MARGIN = 1e-4  # the smallest |ReLU input| a gradient check accepts


def relu_input_floor(module, x):
    """Smallest |input| any ReLU of ``module`` sees for ``x`` (on a float64 copy; the module is untouched)."""
    m = copy.deepcopy(module).to(np.float64)
    seen = []
    for relu in (r for r in m.modules() if isinstance(r, nn.ReLU)):
        def recording(z, _relu=relu):
            seen.append(np.min(np.abs(z)))
            return type(_relu).forward(_relu, z)
        relu.forward = recording
    m(np.asarray(x, np.float64))
    return min(seen)


def input_away_from_kinks(module, rng, shape, tries=20):
    """The first of up to ``tries`` standard-normal inputs of ``shape`` (drawn from ``rng``) that keeps every
    ReLU input of ``module`` at least ``MARGIN`` from 0; fails the test if none does."""
    for _ in range(tries):
        x = rng.standard_normal(shape)
        if relu_input_floor(module, x) > MARGIN:
            return x
    pytest.fail("no input kept the ReLUs away from their kink")
