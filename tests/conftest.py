import os
import sys

import pytest
import torch

# tests import helpers that live next to them (naive_fsa.py, datagen.py, tooling.py)
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they are dominated by thread start-up and contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
