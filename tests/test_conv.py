"""Conv2d: forward and backward against naive loops, finite differences, init, dtype, errors, chunking."""
import math

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_geometry, pairs, seeds

import minigrad
from minigrad import gradcheck, nn
from minigrad.nn import conv as conv_module

small_chunks = st.sampled_from([1, 5, 40, conv_module._CHUNK_COLUMNS])  # columns per GEMM chunk


def _conv(g, bias, dtype=np.float64):
    m = nn.Conv2d(g.in_channels, g.out_channels, g.kernel, g.stride, g.padding, bias=bias)
    return m.to(dtype)


@given(g=conv_geometry(), bias=st.booleans(), seed=seeds, chunk=small_chunks)
def test_forward_and_backward_match_naive_loops(g, bias, seed, chunk):
    """Exact formula check in float64, across chunk sizes that split the batch anywhere (the chunks then
    run on the worker threads, each with its partial weight gradient)."""
    rng = np.random.default_rng(seed)
    m = _conv(g, bias)
    x = rng.standard_normal(g.input_shape)
    grad_output = rng.standard_normal(g.output_shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_module, "_CHUNK_COLUMNS", chunk)
        mp.setattr(conv_module, "_MIN_CHUNK_COLUMNS", 1)
        y = m(x)
        dx = m.backward(grad_output)
    b = None if m.bias is None else m.bias.data
    assert y.shape == g.output_shape
    np.testing.assert_allclose(y, ref.conv2d(x, m.weight.data, b, g.stride, g.padding), rtol=1e-12, atol=1e-12)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(x, m.weight.data, grad_output, g.stride, g.padding)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.weight.grad, dw_ref, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(m.bias.grad, db_ref, rtol=1e-12, atol=1e-12)


@given(g=conv_geometry(), bias=st.booleans(), seed=seeds)
def test_gradcheck(g, bias, seed):
    m = _conv(g, bias)
    res = gradcheck(m, np.random.default_rng(seed).standard_normal(g.input_shape), seed=seed % 1000)
    assert res.ok, str(res)


@pytest.mark.parametrize("in_channels, out_channels", [(3, 2), (2, 4), (1, 3), (2, 5)])
@given(g=conv_geometry(max_stride=1), seed=seeds)
@settings(max_examples=8)
def test_gradcheck_stride_one_both_paths(in_channels, out_channels, g, seed):
    """Stride 1 computes both gradients from im2col(dY) when C_out <= 2*C_in (first two cases), else the
    textbook way (col2im): make sure both are always exercised."""
    g = type(g)(**{**g.__dict__, "in_channels": in_channels, "out_channels": out_channels})
    res = gradcheck(_conv(g, True), np.random.default_rng(seed).standard_normal(g.input_shape))
    assert res.ok, str(res)


@given(g=conv_geometry(), seed=seeds)
@settings(max_examples=10)
def test_gradcheck_strided_col2im_path(g, seed):
    g = type(g)(**{**g.__dict__, "stride": (g.stride[0] + 1, g.stride[1])})  # stride > 1: the col2im path
    res = gradcheck(_conv(g, True), np.random.default_rng(seed).standard_normal(g.input_shape))
    assert res.ok, str(res)


def test_gradcheck_elementwise_tiny():
    m = nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0))
    res = gradcheck(m, (2, 2, 4, 5), mode="elementwise")
    assert res.ok, str(res)


@given(g=conv_geometry(max_batch=3, max_channels=6, max_size=12), bias=st.booleans(), seed=seeds)
@settings(max_examples=15)
def test_float32_close_to_float64(g, bias, seed):
    rng = np.random.default_rng(seed)
    m32 = _conv(g, bias, np.float32)
    m64 = _conv(g, bias)
    m64.load_state_dict(m32.state_dict())
    x = rng.standard_normal(g.input_shape)
    y32, y64 = m32(x.astype(np.float32)), m64(x)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    grad_output = rng.standard_normal(y64.shape)
    dx32, dx64 = m32.backward(grad_output.astype(np.float32)), m64.backward(grad_output)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m32.weight.grad, m64.weight.grad, rtol=1e-4, atol=1e-3)


def test_many_chunks_vgg_like_layer():
    """A batch split into several GEMM chunks (with a partial last one) against the reference."""
    rng = np.random.default_rng(0)
    m = nn.Conv2d(3, 4, 3, padding=1).double()
    x = rng.standard_normal((70, 3, 8, 6))  # 48 pixels per image: 42 images per 2048-column chunk
    y = m(x)
    np.testing.assert_allclose(y, ref.conv2d(x, m.weight.data, m.bias.data, (1, 1), (1, 1)), atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = m.backward(g)
    dx_ref, dw_ref, _ = ref.conv2d_backward(x, m.weight.data, g, (1, 1), (1, 1))
    np.testing.assert_allclose(dx, dx_ref, atol=1e-11)
    np.testing.assert_allclose(m.weight.grad, dw_ref, atol=1e-10)


@st.composite
def winograd_geometry(draw):
    """A 3x3, stride-1 Conv2d of any padding 0-2 and size (partial 4x4 tiles at the edges)."""
    g = draw(conv_geometry(max_size=11))
    padding = draw(pairs(0, 2))
    height, width = (max(size, 3 - 2 * p) for size, p in zip((g.height, g.width), padding))
    return type(g)(**{**g.__dict__, "kernel": (3, 3), "stride": (1, 1), "padding": padding,
                      "height": height, "width": width})


@given(g=winograd_geometry(), bias=st.booleans(), seed=seeds, tiles=st.sampled_from([1, 3, 128]))
def test_winograd_path_matches_naive_loops(g, bias, seed, tiles):
    """The F(4x4, 3x3) path (here forced for any channel count), its batch cut into chunks of ``tiles``."""
    rng = np.random.default_rng(seed)
    m = _conv(g, bias)
    x = rng.standard_normal(g.input_shape)
    grad_output = rng.standard_normal(g.output_shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_module, "WINOGRAD_MIN_CHANNELS", 1)
        mp.setattr(conv_module, "_WINOGRAD_CHUNK_TILES", tiles)
        y = m(x)
        assert m.saved.u is not None  # the fast path ran
        dx = m.backward(grad_output)
    b = None if m.bias is None else m.bias.data
    np.testing.assert_allclose(y, ref.conv2d(x, m.weight.data, b, g.stride, g.padding), rtol=1e-12, atol=1e-12)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(x, m.weight.data, grad_output, g.stride, g.padding)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.weight.grad, dw_ref, rtol=1e-12, atol=1e-12)
    if bias:
        np.testing.assert_allclose(m.bias.grad, db_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_channels, out_channels, kernel, stride, expected", [
    (32, 32, 3, 1, True), (8, 16, 3, 1, True), (3, 32, 3, 1, False), (32, 4, 3, 1, False),
    (32, 32, 3, 2, False), (32, 32, 1, 1, False), (32, 32, (3, 2), 1, False),
])
def test_winograd_is_used_for_3x3_stride_1_with_enough_channels(in_channels, out_channels, kernel, stride, expected):
    m = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1)
    m(np.zeros((2, in_channels, 6, 6), np.float32))
    assert (getattr(m.saved, "u", None) is not None) == expected


@pytest.mark.parametrize("size", [16, 6])
def test_winograd_float32_error_on_a_vgg_layer(size):
    """A 32 -> 32 layer with PyTorch's init, float32: both paths against float64. Winograd's error is a few
    times im2col's (its transforms multiply by up to 8 and add up to 6 terms), far below 1e-4 relative."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((6, 32, size, size))
    g = rng.standard_normal((6, 32, size, size))
    exact = nn.Conv2d(32, 32, 3, padding=1).double()
    y64, dx64 = exact(x), exact.backward(g)
    errors = {}
    for fast in (True, False):
        m = nn.Conv2d(32, 32, 3, padding=1)
        m.load_state_dict(exact.state_dict())
        m.winograd = fast
        y, dx = m(x.astype(np.float32)), m.backward(g.astype(np.float32))
        assert y.dtype == dx.dtype == m.weight.grad.dtype == np.float32
        errors[fast] = [np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2))
                        for a, b in ((y, y64), (dx, dx64), (m.weight.grad, exact.weight.grad), (m.bias.grad, exact.bias.grad))]
    assert max(errors[True]) < 5e-6, errors  # relative RMS error
    assert max(errors[False]) < 2e-6, errors


def test_winograd_off_gives_the_im2col_path():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 8, 9, 7))
    g = rng.standard_normal((3, 8, 9, 7))
    results = []
    for fast in (True, False):
        minigrad.manual_seed(0)
        m = nn.Conv2d(8, 8, 3, padding=1).double()
        m.winograd = fast
        y = m(x)
        assert (getattr(m.saved, "u", None) is not None) == fast
        results.append((y, m.backward(g), m.weight.grad.copy(), m.bias.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_output_size_uses_pytorchs_floor_without_divisibility():
    m = nn.Conv2d(1, 1, (3, 2), stride=(2, 3), padding=(1, 0))
    y = m(np.zeros((1, 1, 8, 10), np.float32))
    assert y.shape == (1, 1, math.floor((8 + 2 - 3) / 2) + 1, math.floor((10 - 2) / 3) + 1) == (1, 1, 4, 3)


def test_dtype_rules_and_accumulation():
    rng = np.random.default_rng(1)
    m = nn.Conv2d(2, 3, 3, padding=1)
    x32 = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    assert m(x32).dtype == np.float32
    y = m(x32.astype(np.float64))  # float64 input computes in float64 with float32 parameters
    assert y.dtype == np.float64
    g = rng.standard_normal(y.shape)
    m.zero_grad()
    m.backward(g)
    first = m.weight.grad.copy(), m.bias.grad.copy()
    m(x32.astype(np.float64))
    m.backward(g)  # a second forward/backward adds to the gradients
    np.testing.assert_allclose(m.weight.grad, 2 * first[0], rtol=1e-6)
    np.testing.assert_allclose(m.bias.grad, 2 * first[1], rtol=1e-6)
    assert m.weight.grad.dtype == np.float32


def test_float16_input_computes_in_float32_and_float16_weights_are_refused():
    m = nn.Conv2d(1, 1, 2)
    assert m(np.ones((1, 1, 3, 3), np.float16)).dtype == np.float32
    m.to(np.float16)
    with pytest.raises(TypeError, match="Conv2d.*float16"):
        m(np.ones((1, 1, 3, 3), np.float16))


def test_inputs_not_mutated_and_non_contiguous_input():
    rng = np.random.default_rng(2)
    m = nn.Conv2d(3, 2, (2, 3), stride=(1, 2), padding=(1, 1)).double()
    x = rng.standard_normal((4, 6, 7, 3)).transpose(0, 3, 1, 2)[:, :, ::1, 1:]  # non-contiguous view
    x_before = x.copy()
    y = m(x)
    g = rng.standard_normal(y.shape)
    g_before = g.copy()
    dx = m.backward(g)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(g, g_before)
    np.testing.assert_allclose(y, ref.conv2d(x_before, m.weight.data, m.bias.data, (1, 2), (1, 1)), atol=1e-12)
    np.testing.assert_allclose(dx, ref.conv2d_backward(x_before, m.weight.data, g, (1, 2), (1, 1))[0], atol=1e-12)


def test_parameters_state_dict_and_repr():
    m = nn.Conv2d(3, 32, 3, padding=1, bias=False)
    assert m.weight.shape == (32, 3, 3, 3) and m.weight.dtype == np.float32 and m.bias is None
    assert list(m.state_dict()) == ["weight"]
    assert repr(m) == "Conv2d(3, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)"
    m = nn.Conv2d(4, 5, (2, 3), stride=(2, 1))
    assert list(m.state_dict()) == ["weight", "bias"]
    assert m.weight.shape == (5, 4, 2, 3) and m.bias.shape == (5,)
    assert repr(m) == "Conv2d(4, 5, kernel_size=(2, 3), stride=(2, 1))"
    assert [name for name, _ in m.named_parameters()] == ["weight", "bias"]
    # PyTorch's positional order: in, out, kernel_size, stride, padding, dilation, groups, bias
    assert nn.Conv2d(2, 3, 3, 1, 1, 1, 1, False).bias is None


def test_default_init_is_pytorchs():
    minigrad.manual_seed(0)
    m = nn.Conv2d(64, 48, (3, 2))
    fan_in = 64 * 3 * 2
    bound = 1 / math.sqrt(fan_in)
    w = m.weight.data.astype(np.float64)
    assert np.abs(w).max() <= bound and np.abs(m.bias.data).max() <= bound
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound  # the whole interval is used
    # U(-b, b) has variance b^2/3; with 18432 draws the sample variance is within ~2% (4.5 sigma: 3%)
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.03
    assert abs(w.mean()) < 4.5 * bound / math.sqrt(3 * w.size)
    # Drawn from the global generator, weight first, then bias (PyTorch's order).
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(m.weight.data, rng.uniform(-bound, bound, m.weight.shape).astype(np.float32))
    np.testing.assert_array_equal(m.bias.data, rng.uniform(-bound, bound, 48).astype(np.float32))


def test_reset_parameters_is_repeatable_with_seed():
    minigrad.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).state_dict()
    minigrad.manual_seed(5)
    b = nn.Conv2d(3, 4, 3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("shape, error, fragment", [
    ((2, 3, 5), ValueError, "4 dimensions"),
    ((2, 4, 5, 5), ValueError, "3 channels"),
    ((1, 3, 2, 8), ValueError, "smaller than kernel_size"),
])
def test_bad_input_shapes(shape, error, fragment):
    m = nn.Conv2d(3, 2, (3, 3))
    with pytest.raises(error, match="Conv2d") as info:
        m(np.zeros(shape, np.float32))
    assert fragment in str(info.value) and str(shape) in str(info.value)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_integer_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="Conv2d.*floating"):
        nn.Conv2d(1, 1, 1)(np.zeros((1, 1, 2, 2), dtype))


@pytest.mark.parametrize("kwargs, error", [
    (dict(in_channels=0), ValueError), (dict(out_channels=-1), ValueError), (dict(kernel_size=0), ValueError),
    (dict(kernel_size=(2, 0)), ValueError), (dict(stride=0), ValueError), (dict(padding=-1), ValueError),
    (dict(kernel_size=(1, 2, 3)), TypeError), (dict(kernel_size=2.5), TypeError), (dict(padding="same"), TypeError),
    (dict(dilation=2), ValueError), (dict(groups=2), ValueError), (dict(padding_mode="reflect"), ValueError),
])
def test_bad_constructor_arguments(kwargs, error):
    args = dict(in_channels=2, out_channels=2, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(error, match="Conv2d"):
        nn.Conv2d(**args)


def test_backward_contract_from_base_class():
    m = nn.Conv2d(1, 1, 2)
    with pytest.raises(RuntimeError):
        m.backward(np.zeros((1, 1, 1, 1), np.float32))
    y = m(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="Conv2d"):
        m.backward(np.zeros((1, 1, 3, 3), np.float32))
    m.backward(np.ones_like(y))
    with pytest.raises(RuntimeError):
        m.backward(np.ones_like(y))


@pytest.mark.torch
@given(g=conv_geometry(), bias=st.booleans(), seed=seeds)
@settings(max_examples=15)
def test_matches_torch(g, bias, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    m = _conv(g, bias)
    x = rng.standard_normal(g.input_shape)
    y = m(x)
    grad_output = rng.standard_normal(y.shape)
    dx = m.backward(grad_output)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(m.weight.data, requires_grad=True)
    tb = torch.tensor(m.bias.data, requires_grad=True) if bias else None
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=g.stride, padding=g.padding)
    ty.backward(torch.tensor(grad_output))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.weight.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(m.bias.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-12)
