"""`ffnlab trace MODEL`: causal tracing (Meng et al. 2022) of the shipped facts the model knows."""

from __future__ import annotations

import argparse

from ffnlab.commands._options import add_device_option
from ffnlab.errors import FFNLabError
from ffnlab.results import results_dir

NAME = "trace"
HELP = "causal tracing of facts: indirect effect of hidden, MLP and attention states by layer and position"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a pretrained name or path (e.g. smollm2), or an ffnlab checkpoint")
    p.add_argument("--prompt", help="trace this prompt instead of the shipped facts (needs --subject)")
    p.add_argument("--subject", help="the subject inside --prompt, whose tokens are corrupted")
    p.add_argument("--facts", type=int, default=5, help="shipped facts to trace (default 5)")
    p.add_argument("--samples", type=int, default=5, help="noise samples per restoration (default 5)")
    p.add_argument("--window", type=int, help="layers restored together for MLP/attention (default: scaled "
                   "from ROME's 10 of 48)")
    p.add_argument("--results", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    add_device_option(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from ffnlab.analysis.tracing import embedding_std, fact_prompts, known_facts, shipped_facts
    from ffnlab.device import module_device
    from ffnlab.open import open_model
    from ffnlab.store import Store

    if args.samples < 1 or args.facts < 1:
        raise FFNLabError("--samples and --facts must be at least 1")
    if args.window is not None and args.window < 1:
        raise FFNLabError(f"--window must be a positive number of layers, got {args.window}")
    if (args.prompt is None) != (args.subject is None):
        raise FFNLabError("--prompt and --subject go together")
    if args.prompt is not None and not (args.prompt.strip() and args.subject.strip()):
        raise FFNLabError("--prompt and --subject must not be empty")
    opened = open_model(args.model, device=args.device)
    model = opened.model
    if args.prompt:
        opened.check_window(len(opened.encode(args.prompt)))
        with torch.no_grad():
            prompt = torch.tensor([opened.encode(args.prompt)], device=module_device(model))
            top = int(model(prompt)[0, -1].argmax())
        facts = fact_prompts(opened.encode, [{"prompt": args.prompt, "subject": args.subject,
                                              "answer": opened.decode([top])}])
        if not facts:
            raise FFNLabError(f"subject {args.subject!r} is not a whole-token part of the prompt")
    else:
        facts = known_facts(model, fact_prompts(opened.encode, shipped_facts()))[: args.facts]
        if not facts:
            raise FFNLabError(f"{opened.name} answers none of the shipped facts; pass --prompt and --subject")
    width = min(128, opened.max_positions or 128)
    noise = 3 * embedding_std(model, opened.tokens_of(None, 8 * width).view(-1, width)[:8])
    store = Store(results_dir(args.results))
    run_id = store.start_run("trace", {"model": opened.name, "prompt": args.prompt, "facts": len(facts),
                                       "samples": args.samples}, name=opened.name)
    try:
        summary = _trace(opened, facts, noise, args)
    except BaseException as err:
        store.fail_run(run_id, f"{type(err).__name__}: {err}")
        raise
    store.finish_run(run_id, {"facts": summary})
    return 0


def _trace(opened, facts: list, noise: float, args: argparse.Namespace) -> list[dict]:
    from ffnlab.analysis.tracing import trace

    model, summary = opened.model, []
    for f in facts:
        tr = trace(model, f.tokens, f.subject, f.answer, noise, samples=args.samples, window=args.window)
        words = [opened.decode([t]) for t in f.tokens]
        print(f"\n{f.text!r} -> {opened.decode([f.answer])!r}: p clean {tr.p_clean:.3f}, corrupted "
              f"{tr.p_corrupt:.3f}, total effect {tr.total_effect:.3f} (window {tr.window})")
        for kind, eff in tr.effects.items():
            print(f"  {kind}: indirect effect by position (max over layers, at that layer)")
            for j, p in enumerate(tr.positions):
                layer = int(eff[:, j].argmax())
                star = "*" if f.subject[0] <= p < f.subject[1] else " "
                print(f"   {star}{words[p]!r:>16} {float(eff[layer, j]):+.3f} @ layer {layer}")
        summary.append({"prompt": f.text, "total_effect": tr.total_effect,
                        **{f"peak_{k}": float(e.max()) for k, e in tr.effects.items()}})
    return summary
