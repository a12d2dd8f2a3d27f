"""Losses: finite-difference gradients, exact formulas, stability, target validation, backward contract."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad import gradcheck, nn

reductions = st.sampled_from(["mean", "sum"])

# Finite-difference step (see test_activation.EPS).
EPS_FD = 1e-5
# Logit scales for the finite-difference check. For a confident correct prediction (margin d) the loss
# log(1 + e^-d) is computed to ~1e-16 ABSOLUTE (log of a sum near 1), so its numeric derivative carries
# ~1e-16 / eps of noise against a gradient of ~e^-d: with one row and logits ~5, d ~ 15 happened under
# the "thorough" profile (relative error 9e-5, though the backward is exact). Scales up to 2 keep d
# small; large logits are checked against the closed form instead (test_cross_entropy_formula).
LOGIT_SCALES = [0.1, 1.0, 2.0]


def naive_cross_entropy(logits, target, reduction="mean"):
    """Direct formula in float64 (fine for moderate logits): -log(exp(z_t) / sum exp(z))."""
    z = np.asarray(logits, dtype=np.float64)
    losses = -np.log(np.exp(z[np.arange(len(target)), target]) / np.exp(z).sum(axis=1))
    return losses.mean() if reduction == "mean" else losses.sum()


@given(n=st.integers(1, 6), c=st.integers(1, 8), scale=st.sampled_from(LOGIT_SCALES),
       reduction=reductions, seed=st.integers(0, 2**16))
def test_gradcheck_cross_entropy(n, c, scale, reduction, seed):
    rng = np.random.default_rng([seed, 1])
    logits, target = scale * rng.standard_normal((n, c)), rng.integers(0, c, n)
    res = gradcheck(nn.CrossEntropyLoss(reduction=reduction), logits, target=target, seed=seed, eps=EPS_FD)
    assert res.ok, str(res)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), reduction=reductions,
       seed=st.integers(0, 2**16))
def test_gradcheck_mse_and_dot_product(shape, reduction, seed):
    rng = np.random.default_rng([seed, 1])
    x, target = rng.standard_normal(shape), rng.standard_normal(shape)
    for crit in (nn.MSELoss(reduction=reduction), nn.DotProductLoss(reduction=reduction)):
        res = gradcheck(crit, x, target=target, seed=seed, eps=EPS_FD)
        assert res.ok, f"{crit}: {res}"


@pytest.mark.parametrize("scale", [3.0, 30.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_formula(reduction, scale, rng):
    logits, target = rng.standard_normal((5, 4)) * scale, np.array([0, 3, 1, 1, 2])
    crit = nn.CrossEntropyLoss(reduction=reduction)
    loss = crit(logits, target)
    assert isinstance(loss, float)
    assert loss == pytest.approx(naive_cross_entropy(logits, target, reduction), rel=1e-12)
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = softmax - np.eye(4)[target]
    np.testing.assert_allclose(crit.backward(), expected / 5 if reduction == "mean" else expected,
                               rtol=1e-12, atol=1e-16)


def test_cross_entropy_stable_for_huge_logits():
    crit = nn.CrossEntropyLoss()
    logits = np.array([[1e4, -1e4, 0.0], [1e4, 1e4 - 2, -1e4]], dtype=np.float32)
    loss = crit(logits, np.array([1, 1]))
    # Row 0: logsumexp = 1e4 (exactly, in float arithmetic), minus -1e4 -> 2e4. Row 1: 2 + log(1 + e^-2).
    assert loss == pytest.approx((2e4 + 2 + np.log1p(np.exp(-2.0))) / 2, rel=1e-6)
    grad = crit.backward()
    assert np.all(np.isfinite(grad)) and grad.dtype == np.float32
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)  # softmax rows sum to 1, minus the one-hot
    # Shifting every logit of a row by a constant changes nothing.
    z = np.random.default_rng(0).standard_normal((3, 5))
    assert crit(z + 1e4, np.array([0, 1, 4])) == pytest.approx(crit(z, np.array([0, 1, 4])), rel=1e-10)


def test_cross_entropy_float32_and_float64(rng):
    logits, target = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    crit = nn.CrossEntropyLoss()
    assert crit(logits.astype(np.float32), target) == pytest.approx(crit(logits, target), rel=1e-6)
    assert crit.backward().dtype == np.float64
    crit(logits.astype(np.float32), target.astype(np.uint8))  # any integer dtype of labels
    assert crit.backward().dtype == np.float32


def test_non_finite_logits_give_non_finite_loss():
    """A diverged network must show up as a NaN loss, not as an exception."""
    assert np.isnan(nn.CrossEntropyLoss()(np.array([[np.nan, 1.0]]), np.array([0])))
    assert not np.isfinite(nn.MSELoss()(np.array([np.inf]), np.array([0.0])))


def test_cross_entropy_bad_targets():
    crit, logits = nn.CrossEntropyLoss(), np.zeros((3, 4))
    with pytest.raises(TypeError, match="CrossEntropyLoss.*integer class indices.*float64"):
        crit(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="CrossEntropyLoss"):
        crit(logits, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*\(3,\).*\(2,\)"):
        crit(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="CrossEntropyLoss.*4 is out of range for 4 classes"):
        crit(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="CrossEntropyLoss.*-1 is out of range"):
        crit(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*2 dimensions.*\(4,\)"):
        crit(np.zeros(4), np.array([0]))
    with pytest.raises(TypeError, match="CrossEntropyLoss.*logits"):
        crit(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="none")


def test_mse_formula(rng):
    x, y = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    crit = nn.MSELoss()
    assert crit(x, y) == pytest.approx(np.mean((x - y) ** 2), rel=1e-14)  # mean over ALL elements
    np.testing.assert_allclose(crit.backward(), 2 * (x - y) / x.size, rtol=1e-14)
    crit = nn.MSELoss(reduction="sum")
    assert crit(x, y) == pytest.approx(np.sum((x - y) ** 2), rel=1e-14)
    np.testing.assert_allclose(crit.backward(), 2 * (x - y), rtol=1e-14)
    with pytest.raises(ValueError, match=r"MSELoss.*\(3, 4, 2\).*\(3, 4\)"):
        crit(x, y[..., 0])
    with pytest.raises(TypeError, match="MSELoss.*target"):
        crit(x, np.zeros(x.shape, dtype=np.int64))


def test_dot_product_formula(rng):
    out, label = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 3, 2))
    crit = nn.DotProductLoss()
    assert crit(out, label) == pytest.approx(np.mean(np.sum(out * label, axis=(1, 2))), rel=1e-13)
    grad = crit.backward()
    np.testing.assert_allclose(grad, label / 5, rtol=1e-15)
    grad[...] = 0  # the gradient is a copy, not the caller's label
    assert np.any(label != 0)
    crit = nn.DotProductLoss(reduction="sum")
    assert crit(out, label) == pytest.approx(np.sum(out * label), rel=1e-13)
    np.testing.assert_array_equal(crit.backward(), label)
    with pytest.raises(ValueError, match="DotProductLoss.*shape"):
        crit(out, label[:4])


@pytest.mark.parametrize("make, args", [
    (nn.CrossEntropyLoss, (np.zeros((2, 3)), np.array([0, 2]))),
    (nn.MSELoss, (np.zeros((2, 3)), np.ones((2, 3)))),
    (nn.DotProductLoss, (np.zeros((2, 3)), np.ones((2, 3)))),
])
def test_backward_contract(make, args):
    crit = make()
    with pytest.raises(RuntimeError, match=f"{make.__name__}.backward.*before"):
        crit.backward()
    crit(*args)
    crit.backward()
    with pytest.raises(RuntimeError, match="twice"):
        crit.backward()
    crit(*args)
    crit.backward()  # a new forward re-arms it
    with pytest.raises((TypeError, ValueError)):
        crit(args[0][:1], args[1])  # a failed forward leaves nothing for backward
    with pytest.raises(RuntimeError, match="before"):
        crit.backward()


def test_inputs_not_mutated(rng):
    logits, target = rng.standard_normal((4, 3)), np.array([0, 1, 2, 0])
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    saved = [a.copy() for a in (logits, target, x, y)]
    for crit, a, b in [(nn.CrossEntropyLoss(), logits, target), (nn.MSELoss(), x, y), (nn.DotProductLoss(), x, y)]:
        crit(a, b)
        crit.backward()
    for before, after in zip(saved, (logits, target, x, y)):
        assert np.array_equal(before, after)


def test_repr_and_keyword_only_reduction():
    assert repr(nn.CrossEntropyLoss(reduction="sum")) == "CrossEntropyLoss(reduction='sum')"
    with pytest.raises(TypeError):
        nn.MSELoss("sum")  # PyTorch's first positional arguments are not `reduction`


@pytest.mark.torch
def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits, target = (rng.standard_normal((6, 5)) * 4).astype(np.float32), rng.integers(0, 5, 6)
    for reduction in ("mean", "sum"):
        zt = torch.from_numpy(logits).requires_grad_()
        ref = torch.nn.CrossEntropyLoss(reduction=reduction)(zt, torch.from_numpy(target))
        ref.backward()
        crit = nn.CrossEntropyLoss(reduction=reduction)
        assert crit(logits, target) == pytest.approx(ref.item(), rel=1e-5)
        np.testing.assert_allclose(crit.backward(), zt.grad.numpy(), rtol=1e-5, atol=1e-7)
