"""Datasets for minigrad: CIFAR-10/100 (find, verify, read, download), splits and batches, synthetic data.

``load_cifar`` gives uint8 NCHW arrays; ``prepare_cifar`` splits them (47,500 / 2,500 / 10,000) and
computes the normalisation; ``BatchLoader(...).epoch(rng)`` yields normalised float32 batches.
"""
from .cifar import (OFFICIAL, ChecksumMismatchError, CifarChecksumWarning, CifarData, CifarFormatError,
                    DatasetNotFoundError, DownloadError, SafeUnpickler, UnsafePickleError, download_cifar,
                    file_md5, find_cifar, load_cifar, search_dirs)
from .loader import (BatchLoader, CifarSplits, augment_crop_flip, channel_stats, normalize, prepare_cifar,
                     stratified_split, stratified_subset)
from .synthetic import gsc_dataset

__all__ = [
    "load_cifar", "find_cifar", "download_cifar", "search_dirs", "file_md5", "CifarData", "OFFICIAL",
    "SafeUnpickler", "CifarFormatError", "UnsafePickleError", "CifarChecksumWarning",
    "DatasetNotFoundError", "DownloadError", "ChecksumMismatchError",
    "stratified_split", "stratified_subset", "channel_stats", "CifarSplits", "prepare_cifar",
    "augment_crop_flip", "normalize", "BatchLoader", "gsc_dataset",
]
