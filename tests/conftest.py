"""Pytest setup: the `slow` marker, the repository root and where the shared test data lives."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared next to the repository: data for tests, never committed (see its README.md).
SHARED = REPO.parent / "shared"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s (builds or loads TensorFlow models)")
    # Keras 3.15 on NumPy 2 warns about __array__(copy=...) on every predict: noise, not a test finding.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
    # Keras warns that shuffle=True is ignored for a tf.data.Dataset; training shuffles in the pipeline.
    config.addinivalue_line("filterwarnings", "ignore:`shuffle=True` was passed:UserWarning")


def shared_path(*parts):
    """Path under ../shared, or skip the test with a message naming the missing path."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (see ../shared/README.md)")
    return path


@pytest.fixture
def shared():
    """shared("legacy", "mask_detector.model") -> Path, or skip naming the missing path."""
    return shared_path


@pytest.fixture(scope="session")
def shared_dir():
    """../shared itself, or skip naming the missing path."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data missing: {SHARED} (see ../shared/README.md)")
    return SHARED
