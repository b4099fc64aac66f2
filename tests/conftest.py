import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# converted GGUF models: one cache per checkout, since each checkout's venv holds its own copy of the file
# and a cache shared by several (keyed on the file's path) would convert again whenever another ran
os.environ.setdefault("FFNLAB_CACHE", str(Path(__file__).resolve().parents[1] / ".venv" / "ffnlab-cache"))
torch.set_num_threads(min(2, torch.get_num_threads()))

# property-based tests: a bounded, reproducible number of examples in `make test`; `make fuzz` runs many
# more, freshly drawn (HYPOTHESIS_PROFILE=fuzz)
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("default", max_examples=25, derandomize=True, **_FUZZ)
settings.register_profile("fuzz", max_examples=1000, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """Every test writes its results under its own temporary directory."""
    monkeypatch.setenv("FFNLAB_RESULTS", str(tmp_path / "results"))
