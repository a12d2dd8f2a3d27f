"""minigrad.data.loader: stratified splits, channel statistics, augmentation, normalisation, batches."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigrad.data import (BatchLoader, CifarData, augment_crop_flip, channel_stats, normalize, prepare_cifar,
                           stratified_split, stratified_subset)
from fake_cifar import fake_cifar_arrays


def cifar_labels(num_classes=10, per_class=5000, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


# ---------------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("num_classes, per_class, per_class_val", [(10, 5000, 250), (100, 500, 25)])
def test_cifar_split_sizes_and_stratification(num_classes, per_class, per_class_val):
    labels = cifar_labels(num_classes, per_class)
    train_idx, val_idx = stratified_split(labels)
    assert len(train_idx) == 47500 and len(val_idx) == 2500
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)  # sorted, unique
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(50000))
    assert np.bincount(labels[val_idx], minlength=num_classes).tolist() == [per_class_val] * num_classes


def test_split_is_deterministic_and_independent_of_global_and_training_seeds():
    labels = cifar_labels()
    np.random.seed(1)
    a = stratified_split(labels, 2500, seed=0)
    np.random.seed(2)
    np.random.default_rng(99).random(10)  # a "training" generator's draws change nothing
    b = stratified_split(labels, 2500, seed=0)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    c = stratified_split(labels, 2500, seed=1)
    assert not np.array_equal(a[1], c[1])


@given(st.lists(st.integers(0, 6), min_size=2, max_size=300), st.data())
def test_split_is_proportional_for_any_labels(labels, data):
    labels = np.array(labels)
    n_val = data.draw(st.integers(0, len(labels) - 1))
    train_idx, val_idx = stratified_split(labels, n_val, seed=data.draw(st.integers(0, 5)))
    assert len(val_idx) == n_val and len(train_idx) == len(labels) - n_val
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(labels)))
    counts = np.bincount(labels, minlength=7)
    got = np.bincount(labels[val_idx], minlength=7)
    exact = n_val * counts / len(labels)
    assert np.all(got >= np.floor(exact)) and np.all(got <= np.ceil(exact))


def test_split_errors():
    with pytest.raises(ValueError, match="n_val"):
        stratified_split(np.arange(10) % 2, n_val=10)
    with pytest.raises(TypeError, match="integer"):
        stratified_split(np.linspace(0, 1, 10), n_val=2)
    with pytest.raises(ValueError, match="cannot draw"):
        stratified_subset(np.arange(10) % 2, 11)


# ---------------------------------------------------------------------------------------------- stats
def test_channel_stats_matches_plain_formula(rng):
    images = rng.integers(0, 256, size=(37, 3, 8, 5), dtype=np.uint8)
    images[:, 1] //= 3  # channels with different statistics
    mean, std = channel_stats(images)
    x = images / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    chunked = channel_stats(images, chunk=4)
    np.testing.assert_array_equal(chunked[0], mean)
    np.testing.assert_array_equal(chunked[1], std)
    with pytest.raises(TypeError, match="uint8"):
        channel_stats(x)


def fake_data(n_train=400, n_test=50):
    arr = fake_cifar_arrays("cifar10", n_train, n_test, seed=1)
    return CifarData(name="cifar10", num_classes=10, source=None, official=False, **arr)


def test_prepare_cifar_splits_and_stats():
    data = fake_data()
    s = prepare_cifar(data, n_val=100)
    assert len(s.train_labels) == 300 and len(s.val_labels) == 100 and len(s.test_labels) == 50
    assert np.bincount(s.val_labels).tolist() == [10] * 10
    np.testing.assert_array_equal(s.train_images, data.train_images[s.train_idx])
    np.testing.assert_array_equal(s.val_labels, data.train_labels[s.val_idx])
    assert np.intersect1d(s.train_idx, s.val_idx).size == 0
    np.testing.assert_array_equal(s.test_images, data.test_images)
    mean, std = channel_stats(data.train_images[s.train_idx])
    np.testing.assert_array_equal(s.mean, mean)
    np.testing.assert_array_equal(s.std, std)

    sub = prepare_cifar(data, n_val=100, train_subset=50, subset_seed=3)
    assert len(sub.train_labels) == 50 and np.bincount(sub.train_labels).tolist() == [5] * 10
    assert np.isin(sub.train_idx, s.train_idx).all()  # a subset of the same training split
    np.testing.assert_array_equal(sub.val_idx, s.val_idx)
    np.testing.assert_array_equal(sub.mean, s.mean)  # stats of the full training split, documented
    other = prepare_cifar(data, n_val=100, train_subset=50, subset_seed=4)
    assert not np.array_equal(other.train_idx, sub.train_idx)
    with pytest.raises(ValueError, match="train_subset"):
        prepare_cifar(data, n_val=100, train_subset=301)


# ---------------------------------------------------------------------------------------------- augmentation
def reference_crop_flip(images, shifts, flips, padding):
    """Plain loop: zero-pad, take the window at (dy, dx), flip left-right."""
    out = np.empty_like(images)
    h, w = images.shape[2:]
    for n in range(len(images)):
        padded = np.zeros((images.shape[1], h + 2 * padding, w + 2 * padding), images.dtype)
        padded[:, padding:padding + h, padding:padding + w] = images[n]
        crop = padded[:, shifts[n, 0]:shifts[n, 0] + h, shifts[n, 1]:shifts[n, 1] + w]
        out[n] = crop[:, :, ::-1] if flips[n] else crop
    return out


@pytest.mark.parametrize("shape, padding", [((64, 3, 32, 32), 4), ((9, 2, 7, 11), 3), ((5, 3, 6, 6), 0)])
def test_augment_matches_loop_reference(shape, padding):
    images = np.random.default_rng(0).integers(1, 256, size=shape, dtype=np.uint8)
    before = images.copy()
    out = augment_crop_flip(images, np.random.default_rng(42), padding)
    draws = np.random.default_rng(42)  # the documented draw order: offsets, then flips
    shifts = draws.integers(0, 2 * padding + 1, size=(shape[0], 2))
    flips = draws.random(shape[0]) < 0.5
    np.testing.assert_array_equal(out, reference_crop_flip(images, shifts, flips, padding))
    np.testing.assert_array_equal(images, before)  # input not mutated
    assert out.dtype == np.uint8 and out.shape == images.shape and not np.shares_memory(out, images)


def test_augment_outputs_are_windows_of_the_padded_image():
    """Independent of draw order: each output is one of the (2p+1)^2 x 2 crops/flips of its input."""
    p = 4
    images = np.random.default_rng(1).integers(1, 256, size=(12, 3, 32, 32), dtype=np.uint8)
    out = augment_crop_flip(images, np.random.default_rng(7), p)
    for n in range(len(images)):
        padded = np.pad(images[n], ((0, 0), (p, p), (p, p)))
        candidates = [win[:, :, ::-1] if f else win
                      for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (0, 1)
                      for win in [padded[:, dy:dy + 32, dx:dx + 32]]]
        assert sum(np.array_equal(out[n], c) for c in candidates) == 1


def test_augment_flip_rate_offsets_and_seeding():
    images = np.random.default_rng(2).integers(0, 256, size=(4000, 1, 4, 4), dtype=np.uint8)
    images[:, :, :, 0] = 0
    images[:, :, :, -1] = 255  # asymmetric, so a flip is visible
    out = augment_crop_flip(images, np.random.default_rng(3), padding=0)
    flipped = np.all(out == images[..., ::-1], axis=(1, 2, 3))
    assert np.all(flipped | np.all(out == images, axis=(1, 2, 3)))
    assert 0.45 < flipped.mean() < 0.55

    a = augment_crop_flip(images[:50], np.random.default_rng(5))
    b = augment_crop_flip(images[:50], np.random.default_rng(5))
    c = augment_crop_flip(images[:50], np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(TypeError, match="Generator"):
        augment_crop_flip(images, 0)


# ---------------------------------------------------------------------------------------------- normalise
def test_normalize_matches_formula(rng):
    images = rng.integers(0, 256, size=(7, 3, 5, 6), dtype=np.uint8)
    mean, std = np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26])
    ref = (images / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]
    out32 = normalize(images, mean, std)
    assert out32.dtype == np.float32 and out32.shape == images.shape
    np.testing.assert_array_equal(out32, ref.astype(np.float32))
    np.testing.assert_allclose(normalize(images, mean, std, dtype=np.float64), ref, rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError, match="std"):
        normalize(images, mean, np.array([0.2, 0.0, 0.3]))
    with pytest.raises(TypeError, match="uint8"):
        normalize(images.astype(np.float32), mean, std)


# ---------------------------------------------------------------------------------------------- batches
def make_loader(n=103, batch_size=16, **kwargs):
    images = np.random.default_rng(0).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(n)  # labels double as identities
    mean, std = channel_stats(images)
    return BatchLoader(images, labels, batch_size, mean=mean, std=std, **kwargs), images, mean, std


def test_batches_cover_every_index_once_and_shapes():
    loader, images, mean, std = make_loader(shuffle=True, augment=True)
    assert len(loader) == 7
    batches = list(loader.epoch(np.random.default_rng(0)))
    assert len(batches) == 7 and [len(y) for _, y in batches] == [16] * 6 + [7]
    seen = np.concatenate([y for _, y in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(103))
    assert not np.array_equal(seen, np.arange(103))  # shuffled
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (16, 3, 32, 32) and y.dtype == np.int64


def test_unshuffled_unaugmented_batches_are_the_normalised_images():
    loader, images, mean, std = make_loader()
    x = np.concatenate([x for x, _ in loader.epoch()])
    np.testing.assert_array_equal(x, normalize(images, mean, std))


def test_drop_last():
    loader, *_ = make_loader(drop_last=True, shuffle=True)
    assert len(loader) == 6
    assert [len(y) for _, y in loader.epoch(np.random.default_rng(1))] == [16] * 6


def test_epochs_reproducible_from_the_rng_alone():
    loader, *_ = make_loader(shuffle=True, augment=True)

    def run(epoch, seed=11):
        return [(x.copy(), y.copy()) for x, y in loader.epoch(np.random.default_rng([seed, epoch]))]

    first, again, other = run(0), run(0), run(1)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(first[0][1], other[0][1])
    with pytest.raises(TypeError, match="Generator"):
        next(loader.epoch(None))


def test_loader_argument_checks():
    images = np.zeros((4, 3, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, np.zeros(4, np.int64), 0)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, np.zeros(3, np.int64), 2)
    with pytest.raises(TypeError, match="uint8"):
        BatchLoader(images.astype(np.float32), np.zeros(4, np.int64), 2)


def test_prepare_cifar_course_normalisation_uses_the_course_constants():
    """The Edinburgh course's fixed constants (SOURCE-NOTES A.3), not the split's own statistics."""
    from minigrad.data.loader import COURSE_MEAN, COURSE_STD
    assert COURSE_MEAN == (0.4914, 0.4822, 0.4465) and COURSE_STD == (0.2023, 0.1994, 0.2010)
    data = fake_data()
    s = prepare_cifar(data, n_val=100, normalization="course")
    np.testing.assert_array_equal(s.mean, np.array(COURSE_MEAN))
    np.testing.assert_array_equal(s.std, np.array(COURSE_STD))
    assert not np.allclose(prepare_cifar(data, n_val=100).mean, s.mean)  # the default is the split's
    with pytest.raises(ValueError, match="normalization"):
        prepare_cifar(data, n_val=100, normalization="imagenet")
