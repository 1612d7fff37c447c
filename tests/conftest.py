import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device and the compiled kernels (skipped otherwise)")


def pytest_collection_modifyitems(config, items):
    import persistent_topk

    if torch.cuda.is_available() and persistent_topk.has_cuda_kernels():
        return
    why = "no CUDA device" if not torch.cuda.is_available() else "persistent_topk built without CUDA kernels"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def gen():
    """A fresh, unseeded generator per test: every run draws new inputs (the seed is printed on failure)."""
    seed = torch.seed()
    print(f"generator seed {seed}")
    g = torch.Generator().manual_seed(seed)
    return g
