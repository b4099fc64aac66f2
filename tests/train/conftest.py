import shutil

import pytest
import torch

from ffnlab.data import prepare_data
from ffnlab.data.corpus import default_corpus_files


@pytest.fixture(scope="session")
def play_dir(tmp_path_factory):
    """Four real plays (a quick corpus for training tests)."""
    root = tmp_path_factory.mktemp("plays")
    for f in default_corpus_files()[:4]:
        shutil.copy(f, root / f.name)
    return root


@pytest.fixture(scope="session")
def char_data(play_dir, tmp_path_factory):
    return prepare_data(str(play_dir), "char", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (on a shared CPU, spinning OpenMP threads cost 100x).
    Module scope: set before the module's cached runs, since bit-exact comparisons need one thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
