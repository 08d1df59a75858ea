import pytest
import torch

# Helpers next to the tests (datagen.py, tooling.py, tiny.py) import as top-level modules: pytest puts this folder on
# sys.path itself (rootdir-relative "prepend" import mode; the folder is not a package).


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they are dominated by thread start-up and contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_clip() -> dict:
    """Keyword arguments of a tiny random CLIP model (see tests/tiny.py)."""
    from tiny import TINY_CLIP
    return dict(TINY_CLIP)


@pytest.fixture
def tiny_run_options(tmp_path):
    """``tiny_run_options(data_root=None, **extra)``: config overrides of a tiny evaluation (see tests/tiny.py)."""
    from tiny import tiny_run_options as options
    return lambda data_root=None, **extra: options(tmp_path, data_root, **extra)
