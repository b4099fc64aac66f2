"""The explorer's numbers are the stored statistics' and the model's: pages, prompt analysis, interventions."""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from html import unescape

import pytest
import torch

from ffnlab.analysis.memories import value_logits
from ffnlab.analysis.neurons import NeuronStats
from ffnlab.errors import FFNLabError
from ffnlab.explore import live
from ffnlab.model.hooks import ablate, capture


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def test_overview_shows_each_layer_with_stored_numbers(server, explorer, tiny):
    status, html, headers = get(server + "/")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    stats = explorer.stats
    from ffnlab.store import Store

    (run,) = Store(tiny[1]).runs(kind="memories")
    for i, layer in enumerate(stats.layers):
        assert f'href="/layer/{i}"' in html
        assert f"{100 * float(layer.sparsity.mean()):.2f}%" in html
        assert f"{100 * run.summary['agree_by_layer'][i]:.3f}%" in html  # from the run that wrote the statistics
    assert "not computed — run <code>ffnlab ladder" in html


def test_overview_shows_a_stored_ladder(explorer, tmp_path):
    from ffnlab.analysis.ladder import LadderConfig
    from ffnlab.experiments.ladder import run_ladder
    from ffnlab.explore import pages
    from ffnlab.explore.explorer import Explorer

    ex = Explorer(explorer.opened, explorer.stats, explorer.stats_dir, tmp_path)
    assert "not computed" in pages.overview(ex, pages.Links(served=True))
    windows = explorer.opened.tokens_of(None, 4 * 32 * 6).view(-1, 32)
    res, out = run_ladder(explorer.opened, windows[:16], windows[16:], LadderConfig(rungs=("affine",), last_n=(1,),
                                                                                    bootstrap=20), tmp_path,
                          progress=False)  # a real ladder, recorded in the store as `ffnlab ladder` does
    html = pages.overview(ex, pages.Links(served=True))
    assert "ladder: affine" in html and "not computed" not in html
    for row in res["layers"]:  # the fraction of loss the affine map recovers, layer by layer
        assert f">{pages._num(row['rungs']['affine']['recovered'])}<" in html
    (out / "summary.json").write_text("{")
    with pytest.raises(FFNLabError, match="damaged ladder results"):
        pages.overview(ex, pages.Links(served=True))


def test_layer_lists_every_neuron_with_its_statistics(server, explorer):
    status, html, _ = get(server + "/layer/1")
    assert status == 200
    rows = re.findall(r'<tr data-index="(\d+)" data-mean="([^"]+)" data-std="[^"]+" data-active="([^"]+)"', html)
    layer = explorer.stats.layers[1]
    assert [int(r[0]) for r in rows] == list(range(layer.n_neurons))
    assert [float(r[2]) for r in rows] == pytest.approx(layer.sparsity.tolist(), abs=1e-12)
    assert [float(r[1]) for r in rows] == pytest.approx(layer.mean.tolist(), abs=1e-12)
    assert html.count('<svg class="hist"') == 3


def test_neuron_page_holds_its_triggers_values_and_neighbours(server, explorer):
    status, html, _ = get(server + "/neuron/1/5")
    assert status == 200
    layer = explorer.stats.layers[1]
    shown = [float(v) for v in re.findall(r'<span class="act (?:pos|neg)">([+-][\d.]+)</span>', html)]
    assert shown == pytest.approx(layer.top_values[5].tolist(), abs=5e-4)
    assert html.count("<mark>") == layer.top_values.shape[1]
    view = explorer.neuron(1, 5)
    # the value read in the vocabulary, sign-corrected as `ffnlab neuron` does
    logits = value_logits(explorer.model, 1, [5])[0] * torch.sign(layer.top_values[5, 0])
    assert [s for _, s in view.promotes] == pytest.approx(logits.topk(10).values.tolist(), abs=1e-5)
    assert [s for _, s in view.suppresses] == pytest.approx(logits.topk(10, largest=False).values.tolist(), abs=1e-5)
    assert "Not stored" in html and 'id="try-off"' in html


def test_similar_neurons_are_the_closest_values_and_most_shared_triggers(explorer):
    values = explorer.model.ffn_values(1).float()
    unit = values / values.norm(dim=1, keepdim=True)
    cos = unit @ unit[5]
    cos[5] = -2
    got = explorer.similar_by_value(1, 5, 4)
    assert [s.neuron for s in got] == cos.topk(4).indices.tolist()
    # brute force: shared top-trigger positions with every other neuron of every layer
    mine = set(explorer.stats.layers[1].top_index[5].tolist())
    counts = {(li, f): len(mine & set(s.top_index[f].tolist())) for li, s in enumerate(explorer.stats.layers)
              for f in range(s.n_neurons) if (li, f) != (1, 5)}
    got = explorer.similar_by_triggers(1, 5, 6)
    assert got and all(counts[(s.layer, s.neuron)] == s.score for s in got)
    assert got[0].score == max(counts.values())
    assert [s.score for s in got] == sorted((s.score for s in got), reverse=True)


PROMPT = "To be, or not to be, that is the"


def test_prompt_sub_updates_and_lens_agree_with_the_model(explorer):
    view = live.analyse(explorer, PROMPT)
    ids = explorer.opened.encode(PROMPT)
    model = explorer.model
    names = [f"blocks.{i}.ffn.hook_post" for i in range(model.n_layers)]
    with capture(model, names) as cache:
        logits = model(torch.tensor([ids]))
    for i, row in enumerate(view.layers):
        m = cache[names[i]][0, -1]
        w = m.abs() * model.ffn_values(i).norm(dim=1)
        assert [s.neuron for s in row.sub_updates] == w.topk(len(row.sub_updates)).indices.tolist()
        assert [s.coefficient for s in row.sub_updates] == pytest.approx(m[[s.neuron for s in row.sub_updates]].tolist())
    # the lens after the last FFN reads the stream the head reads: the model's own prediction
    p = logits[0, -1].softmax(-1)
    assert [q for _, q in view.layers[-1].after] == pytest.approx(p.topk(5).values.tolist(), abs=1e-5)
    assert [q for _, q in view.output] == pytest.approx(p.topk(10).values.tolist(), abs=1e-5)
    assert len(view.top_neurons) == len(ids) and view.position == len(ids) - 1


def test_an_intervention_changes_the_distribution_as_the_hooks_do_and_leaves_the_model_alone(explorer):
    ids = torch.tensor([explorer.opened.encode(PROMPT)])
    before = {k: v.clone() for k, v in explorer.model.state_dict().items()}
    with torch.no_grad():
        clean = explorer.model(ids)[0, -1].softmax(-1)
    iv = live.Intervention.parse(explorer, off="1:3,1:5", ffns="0")
    view = live.intervene(explorer, PROMPT, iv)
    with ablate(explorer.model, ["blocks.1.ffn.hook_post"], "zero", neurons=[3, 5]), \
            ablate(explorer.model, ["blocks.0.ffn.hook_out"], "zero"), torch.no_grad():
        want = explorer.model(ids)[0, -1].softmax(-1)
    assert view.kl > 1e-4
    # fp32 sums of ~100 terms in another order: agree to 1e-7 nats, not to the last relative digit
    assert view.kl == pytest.approx(float((clean * (clean.log() - want.log())).sum()), rel=1e-3, abs=1e-7)
    top = want.topk(3)
    by_token = {r.token: r.intervened for r in view.rows}
    for t, q in zip(top.indices.tolist(), top.values.tolist()):
        assert by_token[explorer.opened.decode([t])] == pytest.approx(q, abs=1e-6)
    with torch.no_grad():
        assert torch.equal(explorer.model(ids)[0, -1].softmax(-1), clean)
    assert all(torch.equal(v, before[k]) for k, v in explorer.model.state_dict().items())
    # scaling a neuron by 1 is no intervention at all
    assert live.intervene(explorer, PROMPT, live.Intervention.parse(explorer, scaled="1:5:1")).kl == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("off, scaled, ffns, words", [
    ("1:999", "", "", "neuron 999 out of range; layer 1 has neurons 0..255"),
    ("7:1", "", "", "layer 7 out of range"),
    ("1-3", "", "", "off item '1-3' is not LAYER:NEURON"),
    ("", "1:2", "", "scale item '1:2' is not LAYER:NEURON:FACTOR"),
    ("", "1:2:nan", "", "scale factor 'nan' must be a number"),
    ("", "1:2:1e9", "", "scale factor '1e9' must be a number"),
    ("", "", "x", "ffn item 'x' is not LAYER"),
    (",".join(f"1:{i}" for i in range(65)), "", "", "65 interventions; at most 64"),
])
def test_bad_interventions_are_one_line(explorer, off, scaled, ffns, words):
    with pytest.raises(FFNLabError, match=re.escape(words)):
        live.Intervention.parse(explorer, off, scaled, ffns)


@pytest.mark.parametrize("path, status, words", [
    ("/layer/2", 400, "layer 2 out of range; run has layers 0..1"),
    ("/layer/abc", 400, "layer must be a non-negative integer, got 'abc'"),
    ("/layer/-1", 400, "layer must be a non-negative integer, got '-1'"),
    ("/neuron/1/256", 400, "neuron 256 out of range; layer 1 has neurons 0..255"),
    ("/neuron/0/99999999999999", 400, "neuron must be a non-negative integer"),
    ("/nothing", 404, "no page at '/nothing'"),
    ("/static/../../../etc/passwd", 404, "no page at"),
    ("/static/%2e%2e/%2e%2e/explorer.py", 404, "no page at"),
    ("/static/..%2fapp.py", 404, "no page at"),
    ("/prompt?text=" + "a" * 3000, 400, "the prompt has 3000 characters; at most 2000"),
    ("/prompt?text=%20%20", 400, "the prompt is empty"),
    ("/prompt?text=abc&position=9", 400, "position 9 out of range; the prompt has positions 0..2"),
    ("/intervene?prompt=abc&off=1:999", 400, "neuron 999 out of range"),
])
def test_bad_requests_get_a_page_with_one_clear_line(server, path, status, words):
    code, html, _ = get(server + path)
    assert code == status
    assert words in unescape(html)
    assert "Traceback" not in html and 'File "' not in html
    assert "root:" not in html and "import " not in html  # nothing from outside the static folder


def test_the_json_endpoint_answers_errors_as_json(server):
    code, body, _ = get(server + "/api/intervene?prompt=abc&scale=0:1:2&ffn=3")
    assert code == 400 and json.loads(body) == {"error": "layer 3 out of range; run has layers 0..1"}
    code, body, _ = get(server + "/api/intervene?prompt=To%20be&scale=0:1:4&ffn=1")
    data = json.loads(body)
    assert code == 200 and data["kl"] > 0 and data["intervention"] == {"scale": "0:1:4", "ffn": "1"}


def test_statistics_of_another_model_are_refused(explorer, tmp_path):
    from ffnlab.explore.explorer import Explorer

    stats = explorer.stats
    other = NeuronStats(stats.cfg, stats.layers[:1], stats.tokens, stats.seq_len)
    where = other.save(tmp_path / "other", {"model": explorer.name})
    with pytest.raises(FFNLabError, match="have 1 layers of widths .*run has 2 of"):
        Explorer(explorer.opened, NeuronStats.load(where), where, tmp_path)
    where = stats.save(tmp_path / "foreign", {"model": "gpt2"})
    with pytest.raises(FFNLabError, match="were made by 'gpt2', not 'run'"):
        Explorer(explorer.opened, NeuronStats.load(where), where, tmp_path)


def test_a_stored_knowledge_neuron_ablation_shows_on_its_neurons_pages(explorer, tmp_path):
    from ffnlab.explore import pages
    from ffnlab.explore.explorer import Explorer
    from ffnlab.results import Result

    def record(fact: str, neurons: list) -> dict:  # the shape c7-knowledge-neurons stores per fact
        return {"fact": fact, "relation": "capital", "prompts": 3, "neurons": neurons, "p": 0.5, "own": -0.3,
                "random": -0.01, "unrelated": -0.05}

    for model, mode in (("run", "quick"), ("gpt2", "full")):  # another model's result is not this neuron's
        facts = [record(f"{model} fact", [[1, 5], [0, 7]]), record("no neurons kept", [])]
        Result("c7-knowledge-neurons", "C7", "", 1, mode, "", extra={"facts": facts},
               config={"model": model}).save(tmp_path / "experiments" / f"c7-knowledge-neurons-{mode}.json")
    ex = Explorer(explorer.opened, explorer.stats, explorer.stats_dir, tmp_path)
    (a,) = ex.neuron(1, 5).ablations
    assert (a.fact, a.group, a.suppress, a.random_suppress, a.unrelated) == ("run fact", [(1, 5), (0, 7)], -0.3,
                                                                            -0.01, -0.05)
    assert ex.neuron(0, 7).ablations == [a] and ex.neuron(1, 6).ablations == []
    html = pages.neuron(ex, pages.Links(served=True), 0, 7)
    assert "run fact" in html and "-30.0%" in html and "-5.0%" in html and 'href="/neuron/1/5"' in html


def test_without_statistics_the_overview_says_what_to_run(explorer, tmp_path):
    from ffnlab.explore import pages
    from ffnlab.explore.explorer import Explorer

    ex = Explorer(explorer.opened, None, None, tmp_path)
    html = pages.overview(ex, pages.Links(served=True))
    assert "No neuron statistics for run yet: run <code>ffnlab memories run</code>" in html
    with pytest.raises(FFNLabError, match="no neuron statistics for 'run'.*run `ffnlab memories run` first"):
        ex.layer(0)
    assert live.analyse(ex, PROMPT).layers  # prompts need no statistics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_explorer_shows_what_it_shows_on_the_cpu(tiny, explorer):
    from ffnlab.explore.explorer import Explorer

    run, results = tiny
    gpu = Explorer.open(str(run), results=results, device="cuda", progress=False)
    a, b = live.analyse(explorer, PROMPT), live.analyse(gpu, PROMPT)
    assert [q for _, q in b.output] == pytest.approx([q for _, q in a.output], abs=1e-4)
    assert [[s.coefficient for s in row.sub_updates] for row in b.layers] == pytest.approx(
        [[s.coefficient for s in row.sub_updates] for row in a.layers], abs=1e-4)
    iv = "1:3,1:5"
    assert live.intervene(gpu, PROMPT, live.Intervention.parse(gpu, off=iv, ffns="0")).kl == pytest.approx(
        live.intervene(explorer, PROMPT, live.Intervention.parse(explorer, off=iv, ffns="0")).kl, rel=1e-3, abs=1e-6)
    assert [s for _, s in gpu.neuron(1, 5).promotes] == pytest.approx([s for _, s in explorer.neuron(1, 5).promotes],
                                                                     abs=1e-4)


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

neurons = st.tuples(st.integers(0, 1), st.integers(0, 255))


@pytest.mark.fuzz
@given(st.lists(neurons, max_size=5), st.lists(st.tuples(st.integers(0, 1), st.integers(0, 255),
                                                        st.floats(-100, 100).map(lambda f: float(f"{f:g}"))),
                                              max_size=5), st.lists(st.integers(0, 1), max_size=2))
def test_an_intervention_reads_back_from_its_url(explorer, off, scaled, ffns):
    iv = live.Intervention(tuple(off), tuple(scaled), tuple(ffns))
    q = iv.query()
    assert live.Intervention.parse(explorer, q.get("off", ""), q.get("scale", ""), q.get("ffn", "")) == iv


@pytest.mark.fuzz
@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=12))
def test_any_intervention_text_parses_or_is_refused_in_one_line(explorer, off, scaled, ffns):
    try:  # anything else than FFNLabError escaping is a failure
        iv = live.Intervention.parse(explorer, off, scaled, ffns)
    except FFNLabError:
        return
    assert all(0 <= layer < 2 and 0 <= n < 256 for layer, n in iv.off + tuple(s[:2] for s in iv.scaled))
    assert all(math.isfinite(f) and abs(f) <= 100 for *_, f in iv.scaled) and all(0 <= f < 2 for f in iv.ffns)


def test_unicode_digits_are_not_indices(explorer, server):
    with pytest.raises(FFNLabError, match="off item '1:²' is not LAYER:NEURON"):
        live.Intervention.parse(explorer, off="1:²")
    code, html, _ = get(server + "/layer/%C2%B2")  # '²'
    assert code == 400 and "layer must be a non-negative integer, got '²'" in unescape(html)
