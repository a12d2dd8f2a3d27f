r"""Splits, normalisation, augmentation and mini-batches for uint8 NCHW image data.

Images stay uint8 until a batch is drawn: a batch is indexed, augmented (crop + flip in uint8
space, zero padding as torchvision's RandomCrop) and only then normalised to float32,
``x = (u8 / 255 - mean[c]) / std[c]``. All randomness of an epoch comes from the Generator passed
to :meth:`BatchLoader.epoch`, so ``np.random.default_rng([seed, epoch])`` replays an epoch exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

__all__ = ["stratified_split", "stratified_subset", "channel_stats", "CifarSplits", "prepare_cifar",
           "augment_crop_flip", "normalize", "BatchLoader"]


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    return labels


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items drawn per class in proportion to the class counts.

    Class k (count c_k of N) gets floor(n c_k / N) items, and the n - sum(floors) left over go one
    each to the classes with the largest fractional parts (ties: lower class first). Within a class
    the items are the first of a permutation drawn from ``default_rng(seed)``, classes in sorted order.
    """
    labels = _check_labels(labels)
    total = len(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not 0 <= n <= total:
        raise ValueError(f"cannot draw {n} items from {total}; need 0 <= n <= {total}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    left = n - int(quota.sum())
    if left:
        # stable sort on -fraction: ties go to the lower class, so the result is deterministic
        quota[np.argsort(-(exact - quota), kind="stable")[:left]] += 1
    rng = np.random.default_rng(seed)
    picked = []
    for k, q in zip(classes, quota):
        members = np.flatnonzero(labels == k)
        picked.append(members[rng.permutation(len(members))[:q]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def stratified_split(labels, n_val: int = 2500, seed: int = 0):
    """``(train_idx, val_idx)``: sorted int64 index arrays, ``n_val`` held out per class proportion.

    The split depends only on ``labels``, ``n_val`` and ``seed`` (not on the training seed), so every
    run of a study sees the same validation set. CIFAR: 50,000 -> 47,500 / 2,500 (250 or 25 per class).
    """
    labels = _check_labels(labels)
    if not 0 <= n_val < len(labels):
        raise ValueError(f"n_val={n_val} must be in [0, {len(labels)}) for {len(labels)} labels")
    val_idx = stratified_subset(labels, n_val, seed).astype(np.int64)
    mask = np.ones(len(labels), bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def channel_stats(images_uint8, chunk: int = 2048):
    """Per-channel ``(mean, std)`` of ``images / 255`` over (N, H, W), float64, population std (ddof 0).

    Exact: with integer sums S1 = sum x and S2 = sum x^2 over the n values of a channel (uint64,
    built ``chunk`` images at a time, never a float copy of the whole set),
    mean = S1 / (255 n) and var = (n S2 - S1^2) / (255 n)^2, the last in Python integers.
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise TypeError(f"images must be uint8 NCHW, got dtype {images.dtype} shape {images.shape}")
    if len(images) == 0:
        raise ValueError("channel_stats needs at least one image")
    channels = images.shape[1]
    s1 = np.zeros(channels, np.uint64)
    s2 = np.zeros(channels, np.uint64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        s1 += block.sum(axis=(0, 2, 3), dtype=np.uint64)
        wide = block.astype(np.uint16)  # 255^2 = 65025 fits in uint16
        s2 += (wide * wide).sum(axis=(0, 2, 3), dtype=np.uint64)
    n = images.size // channels
    mean = np.array([int(a) / (255 * n) for a in s1])
    var = np.array([(n * int(b) - int(a) ** 2) / (255 * n) ** 2 for a, b in zip(s1, s2)])
    return mean, np.sqrt(var)


@dataclass
class CifarSplits:
    """Train / validation / test arrays (uint8 NCHW images, int64 labels) and normalisation stats.

    ``mean``/``std`` come from the *whole* training split (47,500 images for CIFAR), also when
    ``train_subset`` is used: every row of a study then normalises identically whatever its subset
    size, and the estimate is the better one. ``train_idx``/``val_idx`` index the original training set.
    """

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    val_images: np.ndarray = field(repr=False)
    val_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    mean: np.ndarray
    std: np.ndarray
    train_idx: np.ndarray = field(repr=False)
    val_idx: np.ndarray = field(repr=False)
    classes: list = field(repr=False)
    num_classes: int = 0


# The Edinburgh course normalises CIFAR-10 and CIFAR-100 alike with these constants (kuangliu's CIFAR-10
# values, whose std is known to be off; SOURCE-NOTES A.3): the VGG study's full preset uses them.
COURSE_MEAN = (0.4914, 0.4822, 0.4465)
COURSE_STD = (0.2023, 0.1994, 0.2010)
NORMALIZATIONS = ("split", "course")


def prepare_cifar(data, n_val: int = 2500, split_seed: int = 0, train_subset: Optional[int] = None,
                  subset_seed: int = 0, normalization: str = "split") -> CifarSplits:
    """Split a :class:`~minigrad.data.cifar.CifarData` into train/val/test and compute the stats.

    ``train_subset=N`` keeps a stratified subset of N images of the training split (drawn with
    ``subset_seed``); validation and test are unchanged. ``normalization="split"``: mean and std of the
    full training split (per channel); ``"course"``: the course's fixed constants (``COURSE_MEAN``,
    ``COURSE_STD``).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    train_idx, val_idx = stratified_split(data.train_labels, n_val, split_seed)
    train_images, train_labels = data.train_images[train_idx], data.train_labels[train_idx]
    if normalization == "course":
        mean, std = np.array(COURSE_MEAN), np.array(COURSE_STD)
    else:
        mean, std = channel_stats(train_images)
    if train_subset is not None:
        if isinstance(train_subset, bool) or not isinstance(train_subset, (int, np.integer)):
            raise TypeError(f"train_subset must be an int or None, got {type(train_subset).__name__}")
        if not 0 < train_subset <= len(train_idx):
            raise ValueError(f"train_subset={train_subset} must be in [1, {len(train_idx)}]")
        keep = stratified_subset(train_labels, train_subset, subset_seed)
        train_idx, train_images, train_labels = train_idx[keep], train_images[keep], train_labels[keep]
    return CifarSplits(
        train_images=train_images, train_labels=train_labels,
        val_images=data.train_images[val_idx], val_labels=data.train_labels[val_idx],
        test_images=data.test_images, test_labels=data.test_labels, mean=mean, std=std,
        train_idx=train_idx, val_idx=val_idx, classes=list(data.classes), num_classes=data.num_classes)


def augment_crop_flip(images_uint8, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Random crop with zero padding, then random horizontal flip (p = 0.5), per image; a new array.

    As torchvision ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()``: with offsets (dy, dx)
    uniform in [0, 2 padding] and flip f,
    ``out[n, c, i, j] = pad[n, c, i + dy, (W - 1 - j if f else j) + dx]``, pad = zero-padded input.
    Draws ``rng.integers(0, 2 padding + 1, (N, 2))`` then ``rng.random(N)``, in that order.
    """
    images = np.asarray(images_uint8)
    if images.ndim != 4:
        raise ValueError(f"images must be NCHW (4-D), got shape {images.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    n, _, h, w = images.shape
    shifts = rng.integers(0, 2 * padding + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    if padding:
        padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        # windows[n, c, y, x] is the (h, w) window at offset (y, x): a view, so only picking copies.
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        out = windows[np.arange(n), :, shifts[:, 0], shifts[:, 1]]  # (n, C, h, w), a copy
    else:
        out = images.copy()
    out[flips] = out[flips, :, :, ::-1]
    return out


def normalize(images_uint8, mean, std, dtype=np.float32) -> np.ndarray:
    """``(x / 255 - mean[c]) / std[c]`` as ``dtype`` NCHW.

    x is uint8, so the formula is evaluated once per (channel, value) in float64 as a 256-entry table
    and gathered: as exact as the float64 formula rounded to ``dtype``, and one pass over the batch.
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise TypeError(f"images must be uint8 NCHW, got dtype {images.dtype} shape {images.shape}")
    channels = images.shape[1]
    mean = np.broadcast_to(np.asarray(mean, np.float64).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(std, np.float64).reshape(-1), (channels,))
    if np.any(std <= 0) or not np.all(np.isfinite(std)):
        raise ValueError(f"std must be positive and finite, got {std}")
    table = ((np.arange(256) / 255.0)[None, :] - mean[:, None]) / std[:, None]
    table = table.astype(dtype)
    out = np.empty(images.shape, dtype)
    for c in range(channels):
        # uint8 indices < 256 = len(table[c]): "wrap" never wraps, and is much faster than "clip"
        np.take(table[c], images[:, c], out=out[:, c], mode="wrap")
    return out


class BatchLoader:
    """Mini-batches ``(x float NCHW, y int64)`` over uint8 images, normalised with ``mean``/``std``.

    ``epoch(rng)`` shuffles (if ``shuffle``) with ``rng.permutation`` and then augments each batch
    (if ``augment``) with :func:`augment_crop_flip` from the same ``rng``; nothing else is random.
    Only the batch is indexed, augmented and normalised. ``mean``/``std`` None mean 0 and 1 (x / 255).
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = False, augment: bool = False,
                 mean=None, std=None, drop_last: bool = False, padding: int = 4, dtype=np.float32):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise TypeError(f"images must be uint8 NCHW, got dtype {images.dtype} shape {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        channels = images.shape[1]
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), bool(augment)
        self.drop_last, self.padding, self.dtype = bool(drop_last), padding, dtype
        self.mean = np.zeros(channels) if mean is None else np.asarray(mean, np.float64)
        self.std = np.ones(channels) if std is None else np.asarray(std, np.float64)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, rng: Optional[np.random.Generator] = None) -> Iterator:
        """Yield the batches of one epoch; ``rng`` is required when shuffling or augmenting."""
        if (self.shuffle or self.augment) and not isinstance(rng, np.random.Generator):
            raise TypeError(f"epoch() needs a np.random.Generator when shuffle or augment is on, got {rng!r}")
        n = len(self.labels)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment:
                x = augment_crop_flip(x, rng, self.padding)
            yield normalize(x, self.mean, self.std, self.dtype), self.labels[idx]
