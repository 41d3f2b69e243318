"""Fixtures shared by the tests."""
import os
import random

import numpy
import pytest
import torch


@pytest.fixture(autouse=True)
def _same_global_rng_state_for_every_test():
    """Each test starts from one state of the global RNGs (torch, numpy, random), whatever
    ran before it in its xdist worker: a module built without a generator gets the same
    initial weights in every run of the suite."""
    torch.manual_seed(0)
    numpy.random.seed(0)
    random.seed(0)


@pytest.fixture
def image():
    """Two random 64x64 RGB images, fixed seed."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """A tiny digits set (12 train / 4 val images of 64 px) under DETECTRON2_DATASETS layout."""
    from resnext_det.data import ensure_digits_dataset

    root = tmp_path_factory.mktemp("datasets")
    ensure_digits_dataset(root / "digits", num_train=12, num_val=4, image_size=64,
                          digit_sizes=(12, 24), progress_every=0)
    return root


def pytest_configure(config):
    """Under pytest-xdist (make test: -n auto), each worker's torch gets its share of the
    cores xdist counted (the process's CPU affinity), and so do the tools a test runs
    (OMP_NUM_THREADS): a tool's detections then equal those of the same model run in the
    test's process bit for bit (other thread counts sum in another order, and an untrained
    model's near-equal scores swap at the cut of 100 per image)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
