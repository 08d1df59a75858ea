import pytest
import torch

# Helpers next to the tests (datagen.py, tooling.py) import as top-level modules: pytest puts this folder on
# sys.path itself (rootdir-relative "prepend" import mode; the folder is not a package).


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they are dominated by thread start-up and contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
