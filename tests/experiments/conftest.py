import pytest

from ffnlab.experiments.registry import run_experiment


@pytest.fixture
def run_test_size(tmp_path):
    """Run an experiment at the test size into a temporary results directory."""
    def run(name, **kw):
        return run_experiment(name, "quick", results=tmp_path, progress=False, options={"size": "test"}, **kw)
    run.results = tmp_path
    return run
