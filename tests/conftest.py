"""Shared test set-up: paths to the real fixtures, and Keras 2 before TensorFlow loads."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
CORAL = FIXTURES / "coral_test_data"
COMPILER_LOGS = FIXTURES / "edgetpu_compiler"


@pytest.fixture(scope="session")
def coral_dir():
    if not CORAL.is_dir():
        pytest.skip("../shared/fixtures is not laid out beside the project")
    return CORAL
