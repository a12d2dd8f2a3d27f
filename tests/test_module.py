"""Module and Parameter: the tree, modes, dtype casts, state dicts, the backward contract, grad_stats.

Every layer here is a tiny hand-written one defined below, so these tests depend on nothing but
``minigrad.nn.module`` and ``minigrad.nn.container``.
"""
import copy
import re
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad.nn.container import Sequential
from minigrad.nn.module import Module, Parameter


class TinyLinear(Module):
    """y = x W^T + b;  dW = g^T x, db = sum_n g, dx = g W."""

    def __init__(self, in_features, out_features, bias=True, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = Parameter(rng.uniform(-1, 1, (out_features, in_features)), dtype=np.float32)
        if bias:
            self.bias = Parameter(rng.uniform(-1, 1, out_features), dtype=np.float32)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        x = self._check_input(x, ndim=2, channels=self.weight.shape[1])
        dtype = self._compute_dtype(x)
        self.x = x.astype(dtype)
        y = self.x @ self.weight.data.astype(dtype).T
        return y + self.bias.data.astype(dtype) if self.bias is not None else y

    def backward(self, grad_output):
        self.weight.grad += grad_output.T @ self.x
        if self.bias is not None:
            self.bias.grad += grad_output.sum(axis=0)
        return grad_output @ self.weight.data.astype(self.x.dtype)

    def extra_repr(self):
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class TinyTanh(Module):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_output):
        return grad_output * (1 - self.y ** 2)


class RunningCenter(Module):
    """y = x - running_mean, where running_mean tracks the batch mean in training (a buffer)."""

    def __init__(self, features):
        super().__init__()
        self.register_buffer("running_mean", np.zeros(features, dtype=np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def forward(self, x):
        if self.training:
            self.running_mean[...] = 0.9 * self.running_mean + 0.1 * x.mean(axis=0)
            self.num_batches_tracked[...] += 1
        return x - self.running_mean

    def backward(self, grad_output):
        return grad_output


class Block(Module):
    def __init__(self):
        super().__init__()
        self.lin = TinyLinear(4, 4, seed=1)
        self.act = TinyTanh()
        self.center = RunningCenter(4)

    def forward(self, x):
        return self.center(self.act(self.lin(x)))

    def backward(self, grad_output):
        return self.lin.backward(self.act.backward(self.center.backward(grad_output)))


class Net(Module):
    def __init__(self):
        super().__init__()
        self.entry = TinyLinear(3, 4, seed=0)
        self.block0 = Block()
        self.head = TinyLinear(4, 2, bias=False, seed=2)

    def forward(self, x):
        return self.head(self.block0(self.entry(x)))

    def backward(self, grad_output):
        return self.entry.backward(self.block0.backward(self.head.backward(grad_output)))


PARAM_NAMES = ["entry.weight", "entry.bias", "block0.lin.weight", "block0.lin.bias", "head.weight"]
BUFFER_NAMES = ["block0.center.running_mean", "block0.center.num_batches_tracked"]


def x_batch(n=5, features=3, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, features)).astype(dtype)


# ----------------------------------------------------------------------------------------- the tree
def test_registration_order_and_dotted_names():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == PARAM_NAMES
    assert [name for name, _ in net.named_buffers()] == BUFFER_NAMES
    assert [name for name, _ in net.named_modules()] == [
        "", "entry", "block0", "block0.lin", "block0.act", "block0.center", "head"]
    assert [name for name, _ in net.named_children()] == ["entry", "block0", "head"]
    assert list(net.parameters()) == [p for _, p in net.named_parameters()]
    assert net.parameters().__next__() is net.entry.weight
    assert net.num_parameters() == 3 * 4 + 4 + 4 * 4 + 4 + 4 * 2
    assert net.head.bias is None and "bias" not in net.head._parameters
    assert [name for name, _ in net.block0.named_parameters(prefix="stage0")] == [
        "stage0.lin.weight", "stage0.lin.bias"]


def test_sequential_names_children_by_index_or_by_given_name():
    seq = Sequential(TinyLinear(3, 4), TinyTanh(), TinyLinear(4, 2))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = Sequential(OrderedDict(linear=TinyLinear(3, 4), act=TinyTanh()))
    assert [n for n, _ in named.named_parameters()] == ["linear.weight", "linear.bias"]
    assert len(seq) == 3 and isinstance(seq[1], TinyTanh) and len(seq[1:]) == 2
    with pytest.raises(TypeError, match="not a Module"):
        Sequential(TinyTanh(), np.tanh)


def test_reassigning_keeps_position_and_buffers_stay_registered():
    net = Net()
    net.entry.weight = Parameter(np.zeros((4, 3)))  # replacing a parameter keeps its place (as PyTorch)
    assert [name for name, _ in net.named_parameters()] == PARAM_NAMES
    net.block0.center.running_mean = np.ones(4, dtype=np.float32)  # a new array for a buffer: still a buffer
    assert [name for name, _ in net.named_buffers()] == BUFFER_NAMES
    np.testing.assert_array_equal(net.state_dict()["block0.center.running_mean"], 1.0)
    net.entry.bias = None
    assert "entry.bias" not in dict(net.named_parameters())
    del net.head
    assert "head.weight" not in dict(net.named_parameters())


def test_setting_attributes_before_super_init_is_an_error():
    class Broken(Module):
        def __init__(self):
            self.weight = Parameter(np.zeros(2))
            super().__init__()

    with pytest.raises(RuntimeError, match="super"):
        Broken()


def test_parameter_basics():
    p = Parameter([1, 2, 3])
    assert p.dtype == np.float32 and p.grad.dtype == np.float32 and p.shape == (3,) and p.size == 3
    np.testing.assert_array_equal(p.grad, 0)
    source = np.ones(2)
    q = Parameter(source)
    q.data[0] = 5
    assert source[0] == 1  # a Parameter copies its data
    assert Parameter(np.zeros(2)).dtype == np.float64  # floating data keeps its dtype
    assert repr(Parameter(np.zeros((2, 3)), dtype=np.float32)) == "Parameter(shape=(2, 3), dtype=float32)"


# ----------------------------------------------------------------------------------------- modes, dtype
def test_train_eval_propagate_and_return_self():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    net.block0.train(False)
    assert net.training and not net.block0.center.training and net.entry.training


def test_eval_mode_changes_behaviour_of_a_stateful_layer():
    net = Net()
    x = x_batch()
    net(x)
    assert int(net.block0.center.num_batches_tracked) == 1
    net.eval()
    y1, y2 = net(x), net(x)
    np.testing.assert_array_equal(y1, y2)
    assert int(net.block0.center.num_batches_tracked) == 1


@pytest.mark.parametrize("cast, dtype", [(lambda m: m.to(np.float64), np.float64),
                                         (lambda m: m.double(), np.float64),
                                         (lambda m: m.double().float(), np.float32)])
def test_to_double_float_cast_params_grads_and_float_buffers(cast, dtype):
    net = Net()
    net.entry.weight.grad[...] = 0.25
    assert cast(net) is net
    for _, p in net.named_parameters():
        assert p.dtype == dtype and p.grad.dtype == dtype
    assert net.entry.weight.grad[0, 0] == 0.25
    assert net.block0.center.running_mean.dtype == dtype
    assert net.block0.center.num_batches_tracked.dtype == np.int64  # integer buffers keep their type
    assert net(x_batch(dtype=np.float64)).dtype == np.float64


def test_to_rejects_non_float_dtypes():
    with pytest.raises(TypeError, match="floating"):
        Net().to(np.int32)


def test_float64_input_computes_in_float64_and_float32_in_float32():
    lin = TinyLinear(3, 2)
    assert lin(x_batch(dtype=np.float32)).dtype == np.float32
    assert lin(x_batch(dtype=np.float64)).dtype == np.float64


# ----------------------------------------------------------------------------------------- state dicts
def test_state_dict_round_trip():
    net = Net()
    net(x_batch())  # moves the buffers
    state = net.state_dict()
    assert list(state) == PARAM_NAMES[:4] + BUFFER_NAMES + ["head.weight"]
    assert state["block0.center.num_batches_tracked"] == 1
    state["entry.weight"][...] = 99  # a copy: the module is unchanged
    assert not np.any(net.entry.weight.data == 99)

    other = Net()
    for p in other.parameters():
        p.data[...] = 0
    weight_array = other.entry.weight.data
    other.load_state_dict(net.state_dict())
    assert other.entry.weight.data is weight_array  # loaded in place
    for (name, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a.dtype == b.dtype
    x = x_batch(seed=3)
    net.eval()
    other.eval()
    np.testing.assert_array_equal(net(x), other(x))


def test_load_state_dict_errors_on_missing_unexpected_and_wrong_shapes():
    net = Net()
    state = net.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    missing = dict(state)
    del missing["entry.bias"]
    with pytest.raises(KeyError, match="entry.bias"):
        net.load_state_dict(missing)
    with pytest.raises(KeyError, match="extra.weight"):
        net.load_state_dict({**state, "extra.weight": np.zeros(1)})
    wrong = {k: v + 1 for k, v in state.items()}
    wrong["head.weight"] = np.zeros((4, 2))
    with pytest.raises(ValueError, match="head.weight"):
        net.load_state_dict(wrong)
    for key, value in net.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])
    partial = {"entry.bias": np.full(4, 7.0)}
    net.load_state_dict(partial, strict=False)
    np.testing.assert_array_equal(net.entry.bias.data, 7.0)


@pytest.mark.parametrize("key, bad, error, says", [
    ("head.weight", np.full((2, 4), "0.5"), TypeError, "<U3"),                      # strings
    ("head.weight", np.full((2, 4), None), TypeError, "object"),                    # None would load as NaN
    ("block0.lin.bias", np.array([1, "x", 2, 3], dtype=object), TypeError, "object"),
    ("head.weight", np.ones((2, 4)) * 1j, TypeError, "complex"),                     # would drop the imaginary part
    ("block0.center.num_batches_tracked", np.array(2.5), TypeError, "float64"),     # an int buffer
    ("block0.center.running_mean", "0.0", TypeError, "<U3"),
    ("head.weight", np.zeros((4, 2)), ValueError, r"shape \(4, 2\), expected \(2, 4\)"),
])
def test_load_state_dict_checks_every_entry_before_assigning_any(key, bad, error, says):
    """The bad entry comes after others in the model's order: none of those may have been assigned."""
    net = Net()
    net(x_batch())
    before = net.state_dict()
    state = {k: v + 1 for k, v in Net().state_dict().items()}  # every other entry valid and different
    state[key] = bad
    with pytest.raises(error, match=rf"Net\.load_state_dict: {re.escape(key)}\b.*{says}"):
        net.load_state_dict(state)
    after = net.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype
        np.testing.assert_array_equal(after[name], value, err_msg=f"{name} was assigned before {key} failed")


def test_load_state_dict_casts_what_casts():
    """float64 into float32 parameters, integers into floats, int32 into an int64 buffer: as copy_ in PyTorch."""
    net = Net()
    state = net.state_dict()
    state["entry.weight"] = np.arange(12, dtype=np.int64).reshape(4, 3)
    state["head.weight"] = np.full((2, 4), 0.1, dtype=np.float64)
    state["block0.center.num_batches_tracked"] = np.array(3, dtype=np.int32)
    state["block0.lin.bias"] = [1.0, 2.0, 3.0, 4.0]  # a list is an array too
    net.load_state_dict(state)
    assert net.entry.weight.dtype == np.float32 and net.entry.weight.data[3, 2] == 11
    assert net.head.weight.data.dtype == np.float32 and net.head.weight.data[0, 0] == np.float32(0.1)
    assert net.block0.center.num_batches_tracked.dtype == np.int64 and net.block0.center.num_batches_tracked == 3
    np.testing.assert_array_equal(net.block0.lin.bias.data, [1, 2, 3, 4])


def test_zero_grad_zeroes_every_grad_in_place():
    net = Net()
    grads = [p.grad for p in net.parameters()]
    for g in grads:
        g[...] = 1.0
    net.zero_grad()
    for p, g in zip(net.parameters(), grads):
        assert p.grad is g
        np.testing.assert_array_equal(g, 0)


def test_repr_is_pytorch_like():
    text = repr(Net())
    assert text.splitlines()[0] == "Net("
    assert "  (entry): TinyLinear(in_features=3, out_features=4)" in text
    assert "  (block0): Block(\n    (lin): TinyLinear(in_features=4, out_features=4)" in text
    assert "    (act): TinyTanh()" in text
    assert text.endswith(")")


# ----------------------------------------------------------------------------------------- backward contract
def test_backward_computes_the_right_gradients():
    lin = TinyLinear(3, 2).double()
    x = x_batch(dtype=np.float64)
    g = np.random.default_rng(5).standard_normal((5, 2))
    lin(x)
    grad_input = lin.backward(g)
    np.testing.assert_allclose(lin.weight.grad, g.T @ x)
    np.testing.assert_allclose(lin.bias.grad, g.sum(0))
    np.testing.assert_allclose(grad_input, g @ lin.weight.data)
    lin(x)
    lin.backward(g)  # a second forward/backward accumulates
    np.testing.assert_allclose(lin.weight.grad, 2 * g.T @ x)


def test_backward_before_forward_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="TinyLinear.*before forward"):
        TinyLinear(3, 2).backward(np.zeros((5, 2)))


def test_second_backward_for_one_forward_is_a_runtime_error():
    lin = TinyLinear(3, 2)
    lin(x_batch())
    lin.backward(np.ones((5, 2), dtype=np.float32))
    grad = lin.weight.grad.copy()
    with pytest.raises(RuntimeError, match="twice"):
        lin.backward(np.ones((5, 2), dtype=np.float32))
    np.testing.assert_array_equal(lin.weight.grad, grad)  # nothing was added the second time


def test_nested_modules_get_one_backward_each():
    net = Net()
    net(x_batch())
    net.backward(np.ones((5, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match="Net"):
        net.backward(np.ones((5, 2), dtype=np.float32))


def test_wrong_grad_output_shape_is_a_value_error_naming_the_layer():
    lin = TinyLinear(3, 2)
    lin(x_batch())
    with pytest.raises(ValueError, match=r"TinyLinear.*\(5, 2\).*\(5, 3\)"):
        lin.backward(np.zeros((5, 3)))
    net = Net().name_modules()
    net(x_batch())
    with pytest.raises(ValueError, match=r"TinyLinear\(head\)"):
        net.head.backward(np.zeros((2, 5)))


def test_integer_grad_output_is_a_type_error():
    lin = TinyLinear(3, 2)
    lin(x_batch())
    with pytest.raises(TypeError, match="TinyLinear.*floating"):
        lin.backward(np.zeros((5, 2), dtype=np.int64))


@pytest.mark.parametrize("bad", [np.zeros((5, 3), dtype=np.int64), np.zeros((5, 3), dtype=bool)])
def test_check_input_rejects_integer_and_bool_input_naming_the_layer(bad):
    with pytest.raises(TypeError, match="TinyLinear.*floating"):
        TinyLinear(3, 2)(bad)


def test_check_input_rejects_wrong_ndim_and_channels():
    lin = TinyLinear(3, 2)
    with pytest.raises(ValueError, match=r"TinyLinear.*2 dimensions.*\(5,\)"):
        lin(np.zeros(5))
    with pytest.raises(ValueError, match=r"TinyLinear.*3 channels.*\(5, 4\)"):
        lin(np.zeros((5, 4)))
    layer = Module()
    with pytest.raises(ValueError, match="2 or 4 dimensions"):
        layer._check_input(np.zeros((1, 2, 3)), ndim=(2, 4))
    assert layer._check_input([[1.0, 2.0]], ndim=2).shape == (1, 2)


def test_inputs_are_not_modified():
    net = Net()
    x = x_batch()
    x_copy = x.copy()
    net(x)
    g = np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32)
    g_copy = g.copy()
    net.backward(g)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(g, g_copy)


def test_unimplemented_forward_and_backward():
    with pytest.raises(NotImplementedError, match="Module"):
        Module().forward(np.zeros(1))
    with pytest.raises(NotImplementedError):
        Module().backward(np.zeros(1))


# ----------------------------------------------------------------------------------------- grad_stats
def run_step(net, x=None, g=None):
    x = x_batch() if x is None else x
    y = net(x)
    g = np.random.default_rng(7).standard_normal(y.shape).astype(np.float32) if g is None else g
    net.backward(g)
    return g


def test_grad_stats_keys_in_forward_order_and_values_from_grad_in_float64():
    net = Net()
    run_step(net)
    stats = net.grad_stats
    assert list(stats) == PARAM_NAMES
    for name, p in net.named_parameters():
        g = p.grad.astype(np.float64)
        entry = stats[name]
        assert set(entry) == {"mean_abs", "l2", "var", "max_abs", "numel"}
        assert entry["mean_abs"] == pytest.approx(np.abs(g).mean(), rel=1e-14)
        assert entry["l2"] == pytest.approx(np.sqrt((g ** 2).sum()), rel=1e-14)
        assert entry["var"] == pytest.approx(((g - g.mean()) ** 2).mean(), rel=1e-12)
        assert entry["max_abs"] == np.abs(g).max() and entry["numel"] == g.size
        assert all(type(entry[k]) is float for k in ("mean_abs", "l2", "var", "max_abs"))


def test_grad_stats_are_float64_even_when_float32_would_overflow():
    lin = TinyLinear(3, 2)
    lin.weight.grad[...] = 1e20  # (1e20)^2 overflows float32
    assert lin.grad_stats["weight"]["l2"] == pytest.approx(1e20 * np.sqrt(6), rel=1e-7)


def test_record_grad_output_adds_its_key_with_batch_var():
    net = Net().name_modules()
    net.block0.lin.record_grad_output = True
    x = x_batch()
    net(x)
    g = np.random.default_rng(3).standard_normal((5, 2)).astype(np.float32)
    g_head = g @ net.head.weight.data  # what flows back into block0 (center and its backward are identity)
    net.backward(g)
    stats = net.grad_stats
    assert list(stats) == PARAM_NAMES[:4] + ["block0.lin:grad_output"] + PARAM_NAMES[4:]
    recorded = stats["block0.lin:grad_output"]
    # d loss / d lin output = g_head * tanh'(lin output)
    y_lin = net.block0.act.y.astype(np.float64)
    d = g_head.astype(np.float64) * (1 - y_lin ** 2)
    per_feature_var = [np.mean((d[:, j] - d[:, j].mean()) ** 2) for j in range(d.shape[1])]
    assert recorded["batch_var"] == pytest.approx(np.mean(per_feature_var), rel=1e-5)
    assert recorded["numel"] == 20 and recorded["l2"] == pytest.approx(np.sqrt((d ** 2).sum()), rel=1e-5)


def test_record_grad_output_on_the_root_uses_the_class_name():
    net = Net()
    net.record_grad_output = True
    g = run_step(net)
    stats = net.grad_stats
    assert list(stats)[0] == "Net:grad_output"
    assert stats["Net:grad_output"]["batch_var"] == pytest.approx(
        np.mean(g.astype(np.float64).var(axis=0)), rel=1e-12)


def test_record_activations_adds_its_key():
    net = Net()
    net.block0.act.record_activations = True
    run_step(net)
    stats = net.grad_stats
    assert "block0.act:activations" in stats
    a = net.block0.act.y.astype(np.float64)
    assert stats["block0.act:activations"]["std"] == pytest.approx(np.sqrt(a.var(axis=0).mean()), rel=1e-12)
    assert list(stats).index("block0.act:activations") == list(stats).index("block0.lin.bias") + 1


def test_recording_off_adds_nothing():
    net = Net()
    run_step(net)
    assert list(net.grad_stats) == PARAM_NAMES
    assert all(m._grad_output_stats is None and m._activation_stats is None for m in net.modules())
    net.block0.lin.record_grad_output = True  # switched on, but nothing recorded since
    assert list(net.grad_stats) == PARAM_NAMES


@given(n=st.integers(1, 6), seed=st.integers(0, 2 ** 16))
def test_deepcopy_gives_an_independent_module(n, seed):
    net = Net()
    twin = copy.deepcopy(net)
    x = x_batch(n=n, seed=seed)
    np.testing.assert_array_equal(net(x), twin(x))
    twin.entry.weight.data[...] = 0
    assert not np.all(net.entry.weight.data == 0)
    assert [n for n, _ in twin.named_parameters()] == PARAM_NAMES
