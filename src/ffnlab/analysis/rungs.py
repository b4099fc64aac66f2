"""The rungs of the replacement ladder: what one FFN's output can be replaced by.

Each rung is a name (`zero`, `rank-64`, `topk-10`, `moe-16x4`, ...) that `parse_rung` reads,
fitted on the statistics of a *fit* split (`LayerFit`) into an `Edit` that the evaluation
applies to one layer:

    zero, mean, pos-mean            the output replaced by 0, its mean, its mean at each position
    resample                        the output on another evaluation window, same position
                                    (Chan et al. 2022's resampling ablation)
    affine                          the least-squares affine map from the FFN's input (ridge)
    affine-robust                   the affine map fitted on ordinary tokens only, with the FFN kept
                                    on tokens whose output is massive (norm >= MASSIVE x the median
                                    on the first fit batch; Sun et al. 2024): squared error is then
                                    not dominated by the ~1% of tokens a few FFNs write 10^3x larger
    rank-R                          the best rank-R affine map (reduced-rank regression)
    topk-P                          per token, only the P% neurons of largest |activation|
                                    (TEAL, Liu et al. 2024; Deja Vu, Liu et al. 2023)
    prune-act-P, prune-weight-P,    P% of neurons removed for good: lowest mean |activation|,
    prune-random-P                  lowest weight norm ||key|| ||value||, or at random
    moe-ExK                         MoEfication (Zhang et al. 2022): neurons grouped into E experts
                                    by co-activation, a least-squares router, top-K experts a token
    transcoder                      a TopK transcoder (Dunefsky et al. 2024), trained on the fit split
    drop-attn                       not an FFN rung: the same layer's attention output dropped
                                    (He et al. 2024), to compare with `zero` (= dropping the FFN)

FLOPs and parameters are per token, relative to what the original FFN spends; top-k counts
only the kept neurons (as if they were known before computing them: the predictor of
Deja Vu is not counted), MoE its router too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab import distributed as dist
from ffnlab.analysis.moments import Moments
from ffnlab.analysis.transcoder import Transcoder
from ffnlab.errors import FFNLabError

FAMILIES = ("zero", "mean", "pos-mean", "resample", "affine", "affine-robust", "rank", "topk", "prune-act",
            "prune-weight", "prune-random", "moe", "transcoder", "drop-attn")
NEURON_FAMILIES = ("topk", "prune-act", "prune-weight", "prune-random", "moe")
MASSIVE = 10.0  # an output is massive at >= 10x the median output norm (measured ones: ~10^3x; ordinary: < 3x)
_PATTERN = re.compile(r"^(rank|topk|prune-act|prune-weight|prune-random)-(\d+(?:\.\d+)?)$|^moe-(\d+)x(\d+)$")


@dataclass(frozen=True)
class Rung:
    name: str
    family: str
    value: float | None = None  # rank R, percent P
    experts: int | None = None  # moe: E experts, top K
    top: int | None = None

    @property
    def neuron_level(self) -> bool:
        """Edits the neuron activations (the FFN's own down projection then runs) instead of the output."""
        return self.family in NEURON_FAMILIES


def parse_rung(name: str) -> Rung:
    """`rank-64` -> Rung('rank-64', 'rank', 64); FFNLabError naming the accepted forms otherwise."""
    if name in FAMILIES and name not in ("rank", "topk", "prune-act", "prune-weight", "prune-random", "moe"):
        return Rung(name, name)
    m = _PATTERN.match(name)
    if m is None:
        raise FFNLabError(f"unknown rung {name!r}; accepted: zero, mean, pos-mean, resample, affine, affine-robust, "
                          "rank-R, topk-P, prune-act-P, prune-weight-P, prune-random-P (P a percent), moe-ExK, "
                          "transcoder, drop-attn")
    if m.group(3):
        e, k = int(m.group(3)), int(m.group(4))
        if not 0 < k <= e:
            raise FFNLabError(f"rung {name!r}: need 0 < K <= E experts")
        return Rung(name, "moe", experts=e, top=k)
    family, value = m.group(1), float(m.group(2))
    if family == "rank" and (value != int(value) or value < 1):
        raise FFNLabError(f"rung {name!r}: the rank must be a positive integer")
    if family != "rank" and not 0 <= value <= 100:
        raise FFNLabError(f"rung {name!r}: the percent must be in 0..100")
    return Rung(name, family, value)


def collective_device() -> torch.device:
    """Where a collective on the CPU-held fits runs: the rank's GPU under NCCL (which takes no CPU
    tensors), else the CPU."""
    nccl = torch.distributed.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def default_rungs(d_model: int, d_ff: int) -> list[str]:
    """The full ladder for a model of width `d_model` (ranks 8 ... D/2 in powers of two)."""
    ranks, r = [], 8
    while r <= d_model // 2:
        ranks.append(r)
        r *= 2
    experts = 16 if d_ff % 16 == 0 and d_ff >= 64 else 4
    return (["zero", "mean", "pos-mean", "resample", "affine", "affine-robust"] + [f"rank-{r}" for r in ranks]
            + [f"topk-{p}" for p in (50, 25, 10, 5)]
            + [f"prune-{how}-{p}" for how in ("act", "weight", "random") for p in (25, 50)]
            + [f"moe-{experts}x{max(1, experts // 8)}", f"moe-{experts}x{max(1, experts // 4)}", "transcoder",
               "drop-attn"])


# -- the fit statistics of one layer ---------------------------------------------------------
@dataclass
class LayerFit:
    """Streamed statistics of one FFN over the fit tokens; `add` per batch, `merge` across shards.

    x (B, T, D) the FFN's input, post (B, T, F) its neuron activations, pre (B, T, F) the
    (gate) pre-activation, y (B, T, D) its output. Memory is independent of the token count;
    `coact` (F, F) and `x_abs` (D, F) are kept only when a MoE rung needs them.
    """

    moments: Moments  # of (x, y)
    ordinary: Moments  # of (x, y) over the tokens whose output norm is below `massive_bar`
    massive_bar: Tensor  # () MASSIVE x the median output norm on the calibration batch (the first by default)
    pos_sum: Tensor  # (T, D) sum of y at each position
    pos_n: Tensor  # (T,)
    abs_sum: Tensor  # (F,) sum of |post|
    max_abs: Tensor  # (F,) max of |post|
    above: Tensor  # (F,) tokens with |post| > eps
    gate_open: Tensor  # (F,) tokens with pre > 0
    eps: Tensor  # () the activity threshold: 1% of the activation RMS on the calibration batch
    x_abs: Tensor | None = None  # (D, F) sum of x |post|ᵀ (the MoE router's target)
    coact: Tensor | None = None  # (F, F) tokens where both neurons are above eps

    @classmethod
    def zeros(cls, d_model: int, d_ff: int, seq_len: int, moe: bool) -> LayerFit:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        nan = lambda: torch.tensor(float("nan"), dtype=torch.float64)  # noqa: E731
        return cls(Moments.zeros(d_model, d_model), Moments.zeros(d_model, d_model), nan(), z(seq_len, d_model),
                   z(seq_len), z(d_ff), z(d_ff), z(d_ff), z(d_ff), nan(), z(d_model, d_ff) if moe else None,
                   z(d_ff, d_ff) if moe else None)

    @torch.no_grad()
    def calibrate(self, post: Tensor, y: Tensor) -> None:
        """Set the thresholds (`eps`, `massive_bar`) from one batch; shards to be merged share that batch."""
        post, y = post.to(self.pos_sum.device), y.to(self.pos_sum.device)
        self.eps = 0.01 * post.double().square().mean().sqrt()
        self.massive_bar = MASSIVE * y.double().norm(dim=-1).median()

    @torch.no_grad()
    def add(self, x: Tensor, pre: Tensor, post: Tensor, y: Tensor) -> None:
        """Add one batch (the first one calibrates, unless `calibrate` was called before). The state stays
        where it was made (the CPU: what the rungs' edits and the store read), whatever device the batch is on."""
        x, pre, post, y = (t.to(self.pos_sum.device) for t in (x, pre, post, y))
        if torch.isnan(self.eps):
            self.calibrate(post, y)
        x64, y64 = x.double(), y.double()
        a = post.double().abs()
        norm = y64.norm(dim=-1)
        self.moments.add(x64, y64)
        ordinary = norm < self.massive_bar
        self.ordinary.add(x64[ordinary], y64[ordinary])
        t = x.shape[1]
        self.pos_sum[:t] += y64.sum(0)
        self.pos_n[:t] += x.shape[0]
        flat = a.reshape(-1, a.shape[-1])
        self.abs_sum += flat.sum(0)
        self.max_abs = torch.maximum(self.max_abs, flat.max(0).values)
        on = (flat > self.eps).double()
        self.above += on.sum(0)
        self.gate_open += (pre.reshape(-1, pre.shape[-1]) > 0).double().sum(0)
        # float32 products, float64 sums: co-activation counts are exact integers in float32 up to 2^24
        # tokens a batch, and the router needs no more; float64 products cost ~4x the batch's forward
        if self.coact is not None:
            a32, on32 = post.float().abs().reshape(-1, a.shape[-1]), on.float()
            self.x_abs += (x.float().reshape(-1, x.shape[-1]).T @ a32).double()
            self.coact += (on32.T @ on32).double()

    def merge(self, other: LayerFit) -> LayerFit:
        """Add another shard's statistics (exact: sums and maxima). Both shards must have been calibrated
        on the same batch: their thresholds decide which tokens count as active or massive."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.eps, self.massive_bar = other.eps, other.massive_bar
        elif not (torch.equal(self.eps, other.eps) and torch.equal(self.massive_bar, other.massive_bar)):
            raise FFNLabError("ladder fits calibrated on different batches cannot be merged exactly: calibrate every "
                              "shard on the same batch (fit_layers(..., calibrate=batch))")
        self.moments.merge(other.moments)
        self.ordinary.merge(other.ordinary)
        for k in ("pos_sum", "pos_n", "abs_sum", "above", "gate_open"):
            getattr(self, k).add_(getattr(other, k))
        self.max_abs = torch.maximum(self.max_abs, other.max_abs)
        if self.coact is not None and other.coact is not None:
            self.coact += other.coact
            self.x_abs += other.x_abs
        else:  # a shard without MoE statistics: the merged state has none either
            self.coact = self.x_abs = None
        return self

    def gathered(self) -> LayerFit:
        """The merge of this layer's fit over every rank of a torch.distributed group (a collective:
        all ranks call it and get the result; rank order fixes the float summation order)."""
        if dist.world() == 1:
            return self
        comm = collective_device()
        parts = {k: [p.cpu() for p in dist.all_gather(v.to(comm))] for k, v in sorted(self.state_dict().items())}
        fits = [LayerFit.from_state({k: v[r] for k, v in parts.items()}) for r in range(dist.world())]
        merged = fits[0]
        for other in fits[1:]:
            merged = merged.merge(other)
        return merged

    @property
    def n(self) -> int:
        return int(self.moments.n.item())

    def state_dict(self) -> dict[str, Tensor]:
        out = {**self.moments.state_dict("moments."), **self.ordinary.state_dict("ordinary."),
               "massive_bar": self.massive_bar}
        for k in ("pos_sum", "pos_n", "abs_sum", "max_abs", "above", "gate_open", "eps", "x_abs", "coact"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_state(cls, s: dict[str, Tensor]) -> LayerFit:
        keys = ("pos_sum", "pos_n", "abs_sum", "max_abs", "above", "gate_open", "eps")
        return cls(Moments.from_state(s, "moments."), Moments.from_state(s, "ordinary."), s["massive_bar"],
                   *(s[k] for k in keys), s.get("x_abs"), s.get("coact"))

    # -- per-layer descriptions (not rungs) ------------------------------------------------
    def neuron_summary(self) -> dict[str, float]:
        """Dead neurons (never above eps), the share of activations above eps, open gates, massive outputs."""
        n = max(self.n, 1)
        cells = n * len(self.above)
        return {"dead": float((self.above == 0).double().mean()), "active": float(self.above.sum() / cells),
                "gate_open": float(self.gate_open.sum() / cells), "eps": float(self.eps), "tokens": self.n,
                "massive_outputs": self.massive_share}

    @property
    def massive_share(self) -> float:
        """The share of fit tokens whose FFN output is massive (norm >= `massive_bar`)."""
        return 1 - float(self.ordinary.n) / max(self.n, 1)


# -- fitted edits ------------------------------------------------------------------------------
@dataclass
class Edit:
    """One fitted rung for one layer: a new output from (x, out), or new activations from (post, x)."""

    rung: Rung
    fn: Callable[[Tensor, Tensor], Tensor]
    flops: float  # per token
    params: float


def _keep_mask(order: Tensor, percent_removed: float) -> Tensor:
    """A (F,) mask that removes the first `percent_removed`% of the neurons in `order`."""
    keep = torch.ones(len(order), dtype=torch.bool)
    keep[order[: round(len(order) * percent_removed / 100)]] = False
    return keep


def _topk_edit(percent: float) -> Callable[[Tensor, Tensor], Tensor]:
    def edit(post: Tensor, _x: Tensor) -> Tensor:
        k = max(0, min(post.shape[-1], round(post.shape[-1] * percent / 100)))
        if k == post.shape[-1]:
            return post
        idx = post.abs().topk(k, dim=-1).indices
        return torch.zeros_like(post).scatter_(-1, idx, post.gather(-1, idx))
    return edit


def balanced_clusters(features: Tensor, n_clusters: int, iters: int = 25, seed: int = 0) -> Tensor:
    """(F, d) -> (F,) cluster ids, each cluster exactly F / n_clusters points (balanced k-means, greedy
    assignment by distance under capacity), as MoEfication's expert construction needs."""
    f = features.shape[0]
    if f % n_clusters:
        raise FFNLabError(f"MoEfication needs the FFN width {f} to divide into {n_clusters} experts")
    cap = f // n_clusters
    g = torch.Generator().manual_seed(seed)
    centres = features[torch.randperm(f, generator=g)[:n_clusters]].clone()
    assign = torch.zeros(f, dtype=torch.long)
    for _ in range(iters):
        dist = torch.cdist(features, centres)  # (F, E)
        order = dist.flatten().argsort()
        assign.fill_(-1)
        size = torch.zeros(n_clusters, dtype=torch.long)
        placed = 0
        for flat in order.tolist():  # greedy: nearest free (point, cluster) pair first
            i, e = divmod(flat, n_clusters)
            if assign[i] < 0 and size[e] < cap:
                assign[i] = e
                size[e] += 1
                placed += 1
                if placed == f:
                    break
        new = torch.stack([features[assign == e].mean(0) for e in range(n_clusters)])
        if torch.allclose(new, centres):
            break
        centres = new
    return assign


def _moe_edit(fit: LayerFit, experts: int, top: int, ridge: float, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    if fit.coact is None:
        raise FFNLabError("the MoE rung needs co-activation statistics; fit with a moe rung requested")
    diag = torch.diagonal(fit.coact).clamp(min=1)
    features = (fit.coact / torch.sqrt(torch.outer(diag, diag))).float()  # co-activation cosine (F, F)
    assign = balanced_clusters(features, experts, seed=seed)
    member = torch.nn.functional.one_hot(assign, experts).double()  # (F, E)
    m = fit.moments
    cxx, _, _ = m.covariances()
    mx, _ = m.means()
    cov_xa = fit.x_abs / m.n - torch.outer(mx, fit.abs_sum / m.n)  # Cov(x, |post|) (D, F)
    lam = ridge * torch.diagonal(cxx).mean().clamp(min=1e-30)
    router = torch.linalg.solve(cxx + lam * torch.eye(len(mx), dtype=cxx.dtype), cov_xa @ member)  # (D, E)
    bias = (fit.abs_sum / m.n) @ member - mx @ router
    router, bias, member = router.float(), bias.float(), member.float()

    def edit(post: Tensor, x: Tensor) -> Tensor:
        score = x.float() @ router.to(x.device) + bias.to(x.device)  # (B, T, E) predicted |activation| mass
        chosen = torch.zeros_like(score).scatter_(-1, score.topk(top, dim=-1).indices, 1.0)
        return post * (chosen @ member.T.to(x.device)).to(post.dtype)
    return edit


def ffn_cost(ffn: dict[str, Tensor]) -> tuple[float, float]:
    """FLOPs per token (a multiply-add counts 2) and parameters of an FFN given by its weights."""
    flops = sum(2 * w.numel() for k, w in ffn.items() if w.dim() == 2)
    return float(flops), float(sum(w.numel() for w in ffn.values()))


def fit_edit(rung: Rung, fit: LayerFit | None, ffn: dict[str, Tensor], transcoder: Transcoder | None = None,
             ridge: float = 1e-6, seed: int = 0) -> Edit:
    """The rung fitted for one layer (`fit` may be None for zero and resample). `ffn`: the layer's weights
    (`down` (D, F), `in` or `gate`/`up` (F, D), biases); FLOPs and parameters are per token, absolute."""
    d = ffn["down"].shape[0]
    ffn_flops, ffn_params = ffn_cost(ffn)
    f = rung.family
    if f == "zero":
        return Edit(rung, lambda x, out: torch.zeros_like(out), 0, 0)
    if f == "mean":
        mean = (fit.moments.sum_y / fit.moments.n).float()
        return Edit(rung, lambda x, out: mean.to(out).expand_as(out), d, d)
    if f == "pos-mean":
        pos = (fit.pos_sum / fit.pos_n.clamp(min=1)[:, None]).float()
        if (fit.pos_n == 0).any():
            raise FFNLabError("pos-mean: the fit windows are shorter than the evaluation windows")
        def pos_mean(x: Tensor, out: Tensor) -> Tensor:
            if out.shape[1] > len(pos):
                raise FFNLabError(f"pos-mean: fitted on windows of {len(pos)} tokens, evaluated on {out.shape[1]}")
            return pos[: out.shape[1]].to(out).expand_as(out)
        return Edit(rung, pos_mean, d, pos.numel())
    if f == "resample":
        def resample(x: Tensor, out: Tensor) -> Tensor:
            if out.shape[0] < 2:
                raise FFNLabError("resample needs evaluation batches of at least 2 windows")
            return out.roll(1, dims=0)  # another window's output at the same position
        return Edit(rung, resample, 0, 0)
    if f in ("affine", "rank"):
        w, b = fit.moments.affine(ridge) if f == "affine" else fit.moments.reduced_rank(int(rung.value), ridge)
        w, b = w.float(), b.float()
        cost = (2 * d * d, d * d + d) if f == "affine" else (4 * d * rung.value, 2 * d * rung.value + d)
        return Edit(rung, lambda x, out: (x.float() @ w.to(x.device) + b.to(x.device)).to(out.dtype), *cost)
    if f == "affine-robust":
        w, b = (t.float() for t in fit.ordinary.affine(ridge))
        bar, share = float(fit.massive_bar), fit.massive_share

        def robust(x: Tensor, out: Tensor) -> Tensor:
            new = (x.float() @ w.to(x.device) + b.to(x.device)).to(out.dtype)
            return torch.where(out.float().norm(dim=-1, keepdim=True) >= bar, out, new)
        return Edit(rung, robust, 2 * d * d + share * ffn_flops, d * d + d + ffn_params)
    if f == "topk":
        return Edit(rung, _topk_edit(rung.value), ffn_flops * rung.value / 100, ffn_params)
    if f.startswith("prune-"):
        how = f.removeprefix("prune-")
        if how == "act":
            score = fit.abs_sum
        elif how == "weight":
            keys = [ffn[k].float().norm(dim=1) for k in ("in", "gate", "up") if k in ffn]
            score = ffn["down"].float().norm(dim=0) * torch.stack(keys).prod(0)
        else:
            score = torch.rand(len(fit.abs_sum), generator=torch.Generator().manual_seed(seed))
        keep = _keep_mask(score.argsort(), rung.value)
        share = float(keep.double().mean())
        return Edit(rung, lambda post, x: post * keep.to(post.device, post.dtype), ffn_flops * share,
                    ffn_params * share)
    if f == "moe":
        e, k = rung.experts, rung.top
        return Edit(rung, _moe_edit(fit, e, k, ridge, seed), ffn_flops * k / e + 2 * d * e, ffn_params + d * e + e)
    if f == "transcoder":
        if transcoder is None:
            raise FFNLabError("the transcoder rung needs a trained transcoder for this layer")
        tc = transcoder

        def apply(x: Tensor, out: Tensor) -> Tensor:
            with torch.no_grad():
                return tc(x.float()).to(out.dtype)
        return Edit(rung, apply, tc.flops_per_token(), tc.n_params())
    raise FFNLabError(f"rung {rung.name!r} is not an FFN replacement")
