"""Shared test set-up: Hypothesis profiles chosen by HYPOTHESIS_PROFILE (default "ci").

- ``dev``: few examples, for quick local iteration.
- ``ci``: the default; enough examples to find shape bugs while keeping the suite within budget.
- ``thorough``: many examples, for a night run.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar-10-python-from-jpeg-q75.tar.gz"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _no_repo_cache(tmp_path, monkeypatch):
    """Tests never write decoded-data caches into the repository."""
    monkeypatch.setenv("MINIGRAD_CACHE", str(tmp_path / "minigrad-cache"))


@pytest.fixture(scope="session")
def fake_cifar10(tmp_path_factory):
    """A folder holding a small fake CIFAR-10 tarball (120 training and 30 test images), made once per run:
    the CLI tests of the studies read it with ``--data-dir``."""
    from fake_cifar import make_fake_cifar

    folder = tmp_path_factory.mktemp("fake-cifar10")
    make_fake_cifar(folder, "cifar10", n_train=120, n_test=30)
    return folder
