"""The gradient checker itself: it must pass correct layers and catch wrong ones, in both modes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad.gradcheck import GradcheckError, GradcheckResult, gradcheck
from minigrad.nn.module import Module, Parameter

MODES = ["direction", "elementwise"]


class Affine(Module):
    """y = x W^T + b with planted mistakes selectable by ``bug``."""

    def __init__(self, in_features, out_features, bug=None, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = Parameter(rng.uniform(-1, 1, (out_features, in_features)), dtype=np.float32)
        self.bias = Parameter(rng.uniform(-1, 1, out_features), dtype=np.float32)
        self.bug = bug

    def forward(self, x):
        dtype = self._compute_dtype(x)
        self.x = np.asarray(x, dtype=dtype)
        return self.x @ self.weight.data.T + self.bias.data

    def backward(self, grad_output):
        if self.bug == "transposed_weight":  # only shape-compatible for a square weight
            self.weight.grad += (grad_output.T @ self.x).T
        else:
            self.weight.grad += grad_output.T @ self.x
        if self.bug != "missing_bias":
            self.bias.grad += grad_output.sum(axis=0)
        grad_input = grad_output @ self.weight.data
        if self.bug == "wrong_sign":
            return -grad_input
        if self.bug == "factor_2":
            return 2 * grad_input
        return grad_input


class Tanh(Module):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_output):
        return grad_output * (1 - self.y ** 2)


class BufferedShift(Module):
    """y = x * scale + running, after which forward moves the ``running`` buffer towards mean(x) + 1.

    The output depends on the buffer's value before the call, so without restoring the buffer before
    each forward every evaluation would see another shift and the finite differences would measure
    that drift instead of the gradient.
    """

    def __init__(self, features):
        super().__init__()
        self.scale = Parameter(np.linspace(0.5, 1.5, features), dtype=np.float32)
        self.register_buffer("running", np.zeros(features, dtype=np.float32))

    def forward(self, x):
        self.x = x
        y = x * self.scale.data + self.running
        self.running[...] = 0.5 * self.running + 0.5 * x.mean(axis=0) + 1.0
        return y

    def backward(self, grad_output):
        self.scale.grad += (grad_output * self.x).sum(axis=0)
        return grad_output * self.scale.data


class RandomMask(Module):
    """Dropout-like: y = x * mask / (1 - p) with a fresh mask from ``self.rng`` at every forward."""

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        self.mask = (self.rng.random(np.shape(x)) >= self.p) / (1 - self.p)
        return x * self.mask

    def backward(self, grad_output):
        return grad_output * self.mask


class Chain(Module):
    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, f"layer{i}", layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_output):
        for layer in reversed(list(self._modules.values())):
            grad_output = layer.backward(grad_output)
        return grad_output


class SoftmaxCrossEntropy(Module):
    """loss = mean_n -log softmax(x_n)[t_n];  d loss / dx = (softmax(x) - onehot(t)) / N."""

    _is_loss = True

    def __init__(self, bug=None):
        super().__init__()
        self.bug = bug

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target):
        shifted = logits - logits.max(axis=1, keepdims=True)
        self.probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        self.target = np.asarray(target)
        n = len(self.target)
        return float(-np.log(self.probs[np.arange(n), self.target]).mean())

    def backward(self):
        n = len(self.target)
        grad = self.probs.copy()
        grad[np.arange(n), self.target] -= 1
        return grad if self.bug == "no_mean" else grad / n


# ----------------------------------------------------------------------------------------- correct layers pass
@pytest.mark.parametrize("mode", MODES)
def test_correct_layer_passes_with_tiny_error(mode):
    res = gradcheck(Affine(3, 4), (5, 3), mode=mode)
    assert isinstance(res, GradcheckResult)
    assert res.ok, str(res)
    assert set(res.errors) == {"input", "weight", "bias"}


@given(n=st.integers(1, 4), features=st.integers(1, 5), out=st.integers(1, 4), seed=st.integers(0, 1000))
@settings(max_examples=15)
def test_correct_chain_passes_for_random_shapes(n, features, out, seed):
    model = Chain(Affine(features, out, seed=seed), Tanh(), Affine(out, 2, seed=seed + 1))
    res = gradcheck(model, (n, features), seed=seed)
    assert res.ok, str(res)
    assert set(res.errors) == {"input", "layer0.weight", "layer0.bias", "layer2.weight", "layer2.bias"}


# ----------------------------------------------------------------------------------------- wrong layers fail
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bug, target", [("wrong_sign", "input"), ("factor_2", "input"),
                                         ("transposed_weight", "weight"), ("missing_bias", "bias")])
def test_planted_bugs_are_caught_at_the_right_target(mode, bug, target):
    res = gradcheck(Affine(4, 4, bug=bug), (3, 4), mode=mode)
    assert not res.ok, str(res)
    assert res.worst_target == target
    assert res.errors[target] > 0.1
    others = [name for name in res.errors if name != target]
    assert all(res.errors[name] < 1e-6 for name in others), str(res)
    assert "FAILED" in str(res) and target in str(res)


def test_elementwise_mode_reports_the_worst_element():
    class OneWrongElement(Affine):
        def backward(self, grad_output):
            grad_input = super().backward(grad_output)
            grad_input = grad_input.copy()
            grad_input[1, 2] += 0.5
            return grad_input

    res = gradcheck(OneWrongElement(3, 3), (2, 3), mode="elementwise")
    assert not res.ok and res.worst_target == "input" and res.worst_index == (1, 2)


def test_a_bug_in_a_nested_layer_is_reported_with_its_dotted_name():
    res = gradcheck(Chain(Affine(3, 3), Tanh(), Affine(3, 3, bug="missing_bias")), (4, 3))
    assert not res.ok and res.worst_target == "layer2.bias"


def test_wrt_restricts_the_targets_and_unknown_targets_are_an_error():
    res = gradcheck(Affine(3, 3, bug="missing_bias"), (2, 3), wrt=["input", "weight"])
    assert res.ok and set(res.errors) == {"input", "weight"}
    with pytest.raises(ValueError, match="unknown targets.*gamma"):
        gradcheck(Affine(3, 3), (2, 3), wrt=["gamma"])


def test_raise_on_fail_and_bad_mode():
    with pytest.raises(GradcheckError, match="bias"):
        gradcheck(Affine(3, 3, bug="missing_bias"), (2, 3), raise_on_fail=True)
    assert issubclass(GradcheckError, AssertionError)
    with pytest.raises(ValueError, match="mode"):
        gradcheck(Affine(3, 3), (2, 3), mode="forward")


def test_tolerance_is_respected():
    res = gradcheck(Affine(3, 3), (2, 3))
    tight = gradcheck(Affine(3, 3), (2, 3), tolerance=res.max_rel_error / 10)
    assert res.ok and not tight.ok


# ----------------------------------------------------------------------------------------- the upstream gradient
class Standardise(Module):
    """Batch norm without affine: y = xhat = (x - mean) / sqrt(var + eps) per feature, over the batch.

    dx = invstd * (g - mean(g) - xhat * mean(g * xhat)). ``bug="no_projection"`` drops the last term, a
    classic mistake that no all-ones upstream gradient can show: with g = 1 both formulas give 0 (mean(g) = 1
    and mean(xhat) = 0), and so do the finite differences of sum(y), which is 0 whatever x is.
    """

    def __init__(self, bug=None):
        super().__init__()
        self.bug = bug

    def forward(self, x):
        centred = x - x.mean(axis=0)
        self.invstd = 1 / np.sqrt((centred ** 2).mean(axis=0) + 1e-5)
        self.xhat = centred * self.invstd
        return self.xhat

    def backward(self, grad_output):
        g = grad_output - grad_output.mean(axis=0)
        if self.bug != "no_projection":
            g = g - self.xhat * (grad_output * self.xhat).mean(axis=0)
        return self.invstd * g


class RecordsUpstream(Module):
    """y = 2x; every grad_output it is given goes into the class's list (gradcheck works on a deep copy)."""

    seen = []

    def forward(self, x):
        return 2 * x

    def backward(self, grad_output):
        RecordsUpstream.seen.append(np.array(grad_output, copy=True))
        return 2 * grad_output


def test_a_bug_invisible_under_an_all_ones_upstream_gradient_is_caught():
    x = np.random.default_rng(0).standard_normal((6, 3)) * 2 + 1
    ones = np.ones((6, 3))
    right, wrong = Standardise(), Standardise(bug="no_projection")
    right(x)
    wrong(x)
    np.testing.assert_allclose(wrong.backward(ones), right.backward(ones), atol=1e-12)  # the bug hides from ones
    assert gradcheck(Standardise(), x).ok
    for mode in MODES:
        res = gradcheck(Standardise(bug="no_projection"), x, mode=mode)
        assert not res.ok and res.worst_target == "input" and res.max_rel_error > 0.1, str(res)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_upstream_gradient_is_random_and_drawn_from_the_seed(seed):
    seen = []
    for s in (seed, seed, seed + 7):
        RecordsUpstream.seen.clear()
        assert gradcheck(RecordsUpstream(), (5, 4), seed=s).ok
        assert len(RecordsUpstream.seen) == 1  # one backward per check
        seen.append(RecordsUpstream.seen[0])
    upstream = seen[0]
    assert upstream.shape == (5, 4) and np.all(np.isfinite(upstream))
    assert upstream.std() > 0.5 and len(np.unique(upstream)) == upstream.size  # no two entries alike
    np.testing.assert_array_equal(seen[1], upstream)  # the same seed, the same upstream gradient
    assert not np.allclose(seen[2], upstream)  # another seed, another one


# ----------------------------------------------------------------------------------------- stateful layers
@pytest.mark.parametrize("mode", MODES)
def test_layer_whose_buffer_moves_in_forward_is_checked_validly(mode):
    layer = BufferedShift(3)
    x = np.random.default_rng(0).standard_normal((4, 3))
    # the drift is real: two forwards on the same input differ
    probe = BufferedShift(3)
    assert not np.allclose(probe(x), probe(x))
    res = gradcheck(layer, x, mode=mode)
    assert res.ok, str(res)
    np.testing.assert_array_equal(layer.running, 0)  # the caller's buffer did not move


@pytest.mark.parametrize("mode", MODES)
def test_layer_drawing_from_a_generator_is_checked_validly(mode):
    layer = RandomMask(p=0.4, seed=3)
    state = layer.rng.bit_generator.state
    x = np.random.default_rng(1).standard_normal((3, 5))
    probe = RandomMask(p=0.4, seed=3)
    assert not np.array_equal(probe(x), probe(x))  # a new mask at every forward
    res = gradcheck(Chain(Affine(5, 5), layer), x, mode=mode)
    assert res.ok, str(res)
    assert layer.rng.bit_generator.state == state  # the caller's generator was not advanced


def test_a_none_buffer_does_not_break_the_check():
    layer = BufferedShift(2)
    layer.register_buffer("unused", None)
    assert gradcheck(layer, (3, 2)).ok


# ----------------------------------------------------------------------------------------- caller's module
def test_the_callers_module_is_not_modified():
    layer = Affine(3, 2)
    layer.weight.grad[...] = 0.125
    weight = layer.weight.data.copy()
    x = np.random.default_rng(0).standard_normal((4, 3))
    x_copy = x.copy()
    for mode in MODES:
        assert gradcheck(layer, x, mode=mode).ok
    assert layer.weight.dtype == np.float32 and layer.weight.grad.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, weight)
    np.testing.assert_array_equal(layer.weight.grad, 0.125)
    np.testing.assert_array_equal(layer.bias.grad, 0)
    np.testing.assert_array_equal(x, x_copy)
    assert layer._forward_state is None  # no forward ran on the caller's module


def test_float32_input_is_checked_in_float64():
    # In float32 central differences with eps = 1e-6 would be pure rounding noise.
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    res = gradcheck(Affine(3, 2), x)
    assert res.ok and res.max_rel_error < 1e-8


# ----------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("mode", MODES)
def test_loss_through_target(mode):
    logits = np.random.default_rng(0).standard_normal((4, 3))
    target = np.array([0, 2, 1, 2])
    res = gradcheck(SoftmaxCrossEntropy(), logits, target=target, mode=mode)
    assert res.ok, str(res)
    assert set(res.errors) == {"input"}
    bad = gradcheck(SoftmaxCrossEntropy(bug="no_mean"), logits, target=target, mode=mode)
    assert not bad.ok and bad.worst_target == "input"
    # a factor of N = 4 off: |4g - g| / |4g| = 0.75
    assert bad.max_rel_error == pytest.approx(0.75, abs=1e-6)
