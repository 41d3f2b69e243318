"""Fixtures shared by the tests."""
import pytest
import torch


@pytest.fixture
def image():
    """Two random 64x64 RGB images, fixed seed."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
