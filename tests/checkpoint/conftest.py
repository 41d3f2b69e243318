"""Fixtures of the checkpoint tests: tiny images and a tiny randomized source model."""
import pytest
import torch

from ckpt_helpers import TINY
from resnext_det import resnext_classifier
from resnext_det.utils.testing import randomize_norms_


@pytest.fixture(scope="session")
def images():
    """Two random 64x64 RGB images (stride-32 res5 is 2x2)."""
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _tiny_model(stride_in_1x1):
    torch.manual_seed(0)
    model = resnext_classifier(TINY, num_classes=10, stride_in_1x1=stride_in_1x1)
    return randomize_norms_(model).eval()


@pytest.fixture(scope="session")
def tiny_model():
    """Our X50_2x4d classifier (stride in the 3x3) with random weights and BN statistics."""
    return _tiny_model(False)


@pytest.fixture(scope="session")
def tiny_state(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
