"""ECG-JEPA training step on a CPU: medssl against a release-style baseline, arms interleaved.

The baseline is written here the way the public ECG-JEPA release (github.com/sehunfromdaegu/ECG_JEPA,
`ecg_jepa.py` and `pretrain_ECG_JEPA.py`) computes one pretraining step, from a reading of that
code (none of it is copied):
- tokens: each lead cut into 50 patches of 50 samples, a Linear(50 -> D) per patch, fixed 2-D
  sine-cosine positions over (lead, time) added before *every* block;
- attention written out: scores = q k^T * d^-0.5, then `masked_fill(mask == 0, -inf)` with a float
  0/1 Cross-Pattern Attention mask (same lead or same time) that is rebuilt by Python loops at
  every encoder call and indexed down to the visible tokens for the context encoder; softmax; V;
- one random time mask per batch (`mask_type='random'`: a ratio uniform in [0.6, 0.7), int(50 r)
  time patches masked for every lead and every sample);
- target encoder (EMA copy, no grad) on all tokens, layer-normed; context encoder on the visible
  tokens; predictor per lead (Linear(D -> d), mask tokens, 1-D sine-cosine positions before every
  block, no attention mask, LayerNorm, Linear(d -> D)); smooth-L1 loss on the masked tokens;
- stochastic depth 0.1 (linear over depth), as its pretraining script sets;
- AdamW with two groups (weight decay 0.05 on >= 2-D weights, 0 on biases and norms), torch's
  defaults otherwise (on a CPU: the per-parameter for-loop implementation); EMA by a Python loop
  over parameters (`p_k.mul_(m).add_((1 - m) * p_q)`), momentum scheduled from 0.996.
Its bf16 arm wraps the forward in `torch.autocast("cpu", torch.bfloat16)` (the release uses CUDA
fp16 autocast with a GradScaler; bf16 needs no scaler).

`--check-against DIR` (a checkout of the release; needs no timm: a stand-in for its two timm
imports is installed) copies this baseline's weights into the release's own `ecg_jepa` module and
compares the loss and the gradients on the same batch and the same mask (stochastic depth off).

medssl arms: the same sizes through `medssl.ssl.jepa.JEPA` + `ecg_jepa_base` overrides (CroPA
"auto": the cached boolean mask with SDPA in fp32, the factorized kernel in bf16 on a CPU;
per-sample random masks; AdamW groups of `medssl.engine.module.param_groups`; `_foreach` EMA):
- `medssl_default`: the precision `medssl pretrain` would pick here, by the same timing probe
  (`medssl.engine.precision_probe`; its timings are printed and kept in the JSON);
- `medssl_fp32`, `medssl_bf16`: each precision outright;
- one lever each: the other CroPA kernel, fused / foreach AdamW, `torch.compile` (inductor,
  `compile_transformers`), one thread instead of two.
The mask count (int(50 r), r uniform in [0.6, 0.7)) is drawn once per step and shared by every arm,
so no arm is timed on a lighter context than another.

Every arm takes one step in turn (interleaved), so load changes hit all arms alike; the figure per
arm is the median of `--steps` steps after `--warmup` steps (compilation happens in warm-up).

Usage: python benchmarks/bench_ecg_jepa_release.py [--steps 6] [--warmup 2] [--arms a,b,...]
       python benchmarks/bench_ecg_jepa_release.py --check-against /path/to/ECG_JEPA
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from medssl.nn.pos_embed import sincos_2d  # noqa: E402

SIZE = dict(embed_dim=384, depth=6, num_heads=6, pred_dim=192, pred_depth=3, pred_heads=6)
LEADS, N_TIME, PATCH = 8, 50, 50
MASK_RATIO = (0.6, 0.7)


# ----------------------------------------------------------------------------- release-style model
class RAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero a sample's residual branch with probability p, scale the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class RBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dp: float):
        super().__init__()
        self.n1, self.attn, self.n2 = nn.LayerNorm(dim), RAttention(dim, heads), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.dp = dp

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + drop_path(self.attn(self.n1(x), mask), self.dp, self.training)
        return x + drop_path(self.fc2(F.gelu(self.fc1(self.n2(x)))), self.dp, self.training)


def _dprs(rate: float, depth: int) -> list[float]:
    return [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


def release_cropa_mask(c: int, p: int) -> Tensor:
    """Float 0/1 (c*p, c*p): 1 where two tokens share a lead or a time patch, built by loops."""
    size = c * p
    same_lead, same_time = torch.zeros(size, size), torch.zeros(size, size)
    for i in range(c):
        same_lead[i * p:(i + 1) * p, i * p:(i + 1) * p] = 1
    for j in range(p):
        same_time[j::p, j::p] = 1
    return (same_lead + same_time).clamp(max=1)


class REncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, drop_path_rate: float):
        super().__init__()
        self.embed = nn.Linear(PATCH, dim)
        self.register_buffer("pos", sincos_2d(dim, LEADS, N_TIME).float(), persistent=False)
        self.blocks = nn.ModuleList(RBlock(dim, heads, dp) for dp in _dprs(drop_path_rate, depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, time_mask: Tensor | None = None) -> Tensor:
        """x (B, c, p, t); time_mask (p,) bool, True = masked (then only visible tokens are encoded)."""
        b = x.shape[0]
        h = self.embed(x.reshape(b, LEADS * N_TIME, PATCH))
        pos = self.pos.unsqueeze(0).expand(b, -1, -1)
        mask = release_cropa_mask(LEADS, N_TIME).to(x.device)
        if time_mask is not None:
            vis = (~time_mask).repeat(LEADS)
            h, pos, mask = h[:, vis], pos[:, vis], mask[vis][:, vis]
        for blk in self.blocks:
            h = blk(h + pos, mask)
        return self.norm(h)


class RPredictor(nn.Module):
    def __init__(self, dim: int, pdim: int, depth: int, heads: int, drop_path_rate: float):
        super().__init__()
        self.embed = nn.Linear(dim, pdim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pdim))
        self.register_buffer("pos", sincos_2d(pdim, 1, N_TIME).float(), persistent=False)
        self.blocks = nn.ModuleList(RBlock(pdim, heads, dp) for dp in _dprs(drop_path_rate, depth))
        self.norm, self.proj = nn.LayerNorm(pdim), nn.Linear(pdim, dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, h: Tensor, time_mask: Tensor) -> Tensor:
        n_mask = int(time_mask.sum())
        z = self.embed(h)
        b, _, d = z.shape
        z = z.reshape(b * LEADS, -1, d)  # one sequence per lead: visible tokens, then mask tokens
        z = torch.cat([z, self.mask_token.expand(z.shape[0], n_mask, d)], dim=1)
        order = torch.cat([(~time_mask).nonzero()[:, 0], time_mask.nonzero()[:, 0]])
        pos = self.pos[order].unsqueeze(0).expand(z.shape[0], -1, -1)
        for blk in self.blocks:
            z = blk(z + pos, None)
        return self.proj(self.norm(z)).reshape(b, -1, h.shape[-1])


# The paper's size (ViT-B encoder, predictor 384 x 6), for the GPU benchmark.
PAPER_SIZE = dict(embed_dim=768, depth=12, num_heads=16, pred_dim=384, pred_depth=6, pred_heads=12)


class ReleaseStyleJEPA(nn.Module):
    def __init__(self, drop_path_rate: float = 0.1, init_std: float = 0.02, size: dict | None = None):
        super().__init__()
        s = size or SIZE
        self.encoder = REncoder(s["embed_dim"], s["depth"], s["num_heads"], drop_path_rate)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = RPredictor(s["embed_dim"], s["pred_dim"], s["pred_depth"], s["pred_heads"], drop_path_rate)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def draw_mask(n_mask: int | None = None) -> Tensor:
        """One (p,) time mask per batch from the global RNG: a ratio uniform in MASK_RATIO, int(p r)
        positions (or `n_mask` positions: the benchmark gives every arm the same count per step)."""
        if n_mask is None:
            lo, hi = MASK_RATIO
            n_mask = int(N_TIME * (lo + (hi - lo) * torch.rand(1).item()))
        mask = torch.zeros(N_TIME, dtype=torch.bool)
        mask[torch.randperm(N_TIME)[:n_mask]] = True
        return mask

    def forward(self, x: Tensor, n_mask: int | None = None) -> Tensor:
        b = x.shape[0]
        x = x.reshape(b, LEADS, N_TIME, PATCH)
        time_mask = self.draw_mask(n_mask).to(x.device)
        with torch.no_grad():
            t = self.target_encoder(x)
            t = F.layer_norm(t, t.shape[-1:]).reshape(b, LEADS, N_TIME, -1)
            t = t[:, :, time_mask].reshape(b, -1, t.shape[-1])
        z = self.predictor(self.encoder(x, time_mask), time_mask)
        n_mask = int(time_mask.sum())
        z = z.reshape(b, LEADS, -1, z.shape[-1])[:, :, -n_mask:].reshape(b, -1, z.shape[-1])
        return F.smooth_l1_loss(z, t)


def release_optimizer(model: nn.Module, **kw) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if "bias" not in n and p.ndim != 1]
    rest = [p for n, p in named if "bias" in n or p.ndim == 1]
    return torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=5e-5,
                             weight_decay=0.05, **kw)


@torch.no_grad()
def release_ema(model: ReleaseStyleJEPA, m: float) -> None:
    for q, k in zip(model.encoder.parameters(), model.target_encoder.parameters()):
        k.data.mul_(m).add_((1.0 - m) * q.detach().data)


# ----------------------------------------------------------------------------- medssl arms
def medssl_model(cropa_impl: str = "auto", seed: int = 0):
    from bench_ecg_jepa import build

    return build("small", naive=False, seed=seed, cropa_impl=cropa_impl)


def medssl_optimizer(model: nn.Module, **kw) -> torch.optim.AdamW:
    from medssl.engine.module import param_groups

    return torch.optim.AdamW(param_groups(model, 0.05), lr=5e-5, **kw)


def medssl_masks(batch: int, n_mask: int, step: int) -> tuple[Tensor, Tensor]:
    """(keep_time, mask_time) for `medssl.ssl.jepa.JEPA`: medssl's own `RandomPatchMasker` with its
    ratio range pinned to n_mask / 50, so the count is the benchmark's and the positions are random."""
    from medssl.ssl.masking import RandomPatchMasker

    return RandomPatchMasker((n_mask / N_TIME,) * 2)(batch, N_TIME, torch.Generator().manual_seed(step))


def mask_counts(total: int, seed: int = 0) -> list[int]:
    """Masked time patches at each step, int(50 r) with r uniform in MASK_RATIO (the release's rule)."""
    lo, hi = MASK_RATIO
    g = torch.Generator().manual_seed(seed)
    return [int(N_TIME * (lo + (hi - lo) * torch.rand((), generator=g).item())) for _ in range(total)]


class Arm:
    def __init__(self, name: str, kind: str, model: nn.Module, opt: torch.optim.Optimizer, *, bf16: bool = False,
                 threads: int | None = None):
        self.name, self.kind, self.model, self.opt, self.bf16, self.threads = name, kind, model, opt, bf16, threads
        self.times: list[float] = []
        self.model.train()

    def step(self, x: Tensor, i: int, total: int, n_mask: int) -> float:
        """One optimiser step with `n_mask` of the 50 time patches masked (the same count for every
        arm at step i, so no arm is timed on a lighter context than another)."""
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        momentum = 0.996 + i * (1.0 - 0.996) / max(total, 1)
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        if self.kind == "medssl_bf16_weights":
            x = x.bfloat16()
        with ctx:
            loss = self.model(x, n_mask) if self.kind == "release" else self.model(x, medssl_masks(x.shape[0], n_mask, i))
        loss.backward()
        self.opt.step()
        loss.item()
        if self.kind == "release":
            release_ema(self.model, momentum)
        else:
            self.model.update_target(momentum)
        dt = time.perf_counter() - t
        torch.set_num_threads(before)
        return dt


def build_arms(names: list[str]) -> dict[str, Arm]:
    from medssl.nn.transformer import compile_transformers

    def medssl(name, impl="auto", compile_=False, bf16=False, threads=None, **opt_kw):
        model = medssl_model(impl)
        if compile_:
            compile_transformers(model)
        return Arm(name, "medssl", model, medssl_optimizer(model, **opt_kw), bf16=bf16, threads=threads)

    def medssl_default(name):
        """medssl as `medssl pretrain` runs it on one CPU process: the precision its probe picks."""
        from medssl.engine.precision_probe import probe_cpu_precision

        model = medssl_model()
        probe = probe_cpu_precision(model, torch.randn(16, LEADS, N_TIME * PATCH))
        print(f"{name}: the precision probe chose {probe['chosen']} ({probe})", file=sys.stderr)
        arm = Arm(name, "medssl", model, medssl_optimizer(model), bf16=probe["chosen"] == "bf16-mixed")
        arm.probe = probe
        return arm

    def medssl_bf16_weights(name):
        """The whole model in bf16 (weights, activations, optimiser state), no autocast and no fp32
        master copies: a lower bound on the step time of true bf16 weights with master copies."""
        model = medssl_model().to(torch.bfloat16)
        return Arm(name, "medssl_bf16_weights", model, medssl_optimizer(model))

    def release(name, bf16=False, threads=None, **opt_kw):
        torch.manual_seed(0)
        model = ReleaseStyleJEPA()
        return Arm(name, "release", model, release_optimizer(model, **opt_kw), bf16=bf16, threads=threads)

    makers = {
        "release_fp32": lambda n: release(n),
        "release_bf16": lambda n: release(n, bf16=True),
        "medssl_default": medssl_default,
        "medssl_fp32": lambda n: medssl(n),
        "medssl_bf16": lambda n: medssl(n, bf16=True),
        # levers, one at a time ("auto" CroPA: the cached mask + SDPA in fp32, the factorized kernel in bf16)
        "medssl_fp32_factorized": lambda n: medssl(n, impl="factorized"),
        "medssl_bf16_dense_mask": lambda n: medssl(n, impl="sdpa", bf16=True),
        "medssl_bf16_foreach_adamw": lambda n: medssl(n, bf16=True, foreach=True),
        "medssl_bf16_fused_adamw": lambda n: medssl(n, bf16=True, fused=True),
        "medssl_bf16_compile": lambda n: medssl(n, compile_=True, bf16=True),
        "medssl_fp32_compile": lambda n: medssl(n, compile_=True),
        "medssl_fp32_fused_adamw": lambda n: medssl(n, fused=True),
        "medssl_bf16_weights": medssl_bf16_weights,
        # one thread instead of torch's default (2 here), both codes alike
        "release_fp32_1_thread": lambda n: release(n, threads=1),
        "release_bf16_1_thread": lambda n: release(n, bf16=True, threads=1),
        "medssl_fp32_1_thread": lambda n: medssl(n, threads=1),
        "medssl_bf16_1_thread": lambda n: medssl(n, bf16=True, threads=1),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise SystemExit(f"unknown arms {sorted(unknown)}; known: {', '.join(makers)}")
    return {n: makers[n](n) for n in names}


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- check against the release
def check_against(release_dir: Path) -> dict:
    """Copy the baseline's weights into the release's own module; same batch, same mask: compare."""
    import types

    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = lambda p: (_ for _ in ()).throw(RuntimeError("drop path is off in the check"))
    layers.trunc_normal_ = nn.init.trunc_normal_
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    sys.path.insert(0, str(release_dir))
    from ecg_jepa import ecg_jepa  # the release's own module

    s = SIZE
    theirs = ecg_jepa(encoder_embed_dim=s["embed_dim"], encoder_depth=s["depth"], encoder_num_heads=s["num_heads"],
                      predictor_embed_dim=s["pred_dim"], predictor_depth=s["pred_depth"],
                      predictor_num_heads=s["pred_heads"], drop_path_rate=0.0, mask_type="random",
                      mask_scale=MASK_RATIO, c=LEADS, p=N_TIME, t=PATCH)
    torch.manual_seed(1)
    mine = ReleaseStyleJEPA(drop_path_rate=0.0)

    def their_name(n: str) -> str:
        for a, b in ((".encoder_blocks.blocks.", ".blocks."), (".predictor_blocks.blocks.", ".blocks."),
                     ("predictor.predictor_embed", "predictor.embed"), ("predictor.predictor_norm", "predictor.norm"),
                     ("predictor.predictor_proj", "predictor.proj"), (".W_P", ".embed"), (".norm1", ".n1"),
                     (".norm2", ".n2"), (".attn.proj", ".attn.out"), (".mlp.fc", ".fc")):
            n = n.replace(a, b)
        return n

    mine_params = dict(mine.named_parameters())
    copied = 0
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if n.endswith("pos_embed"):  # a fixed table (medssl's sincos_2d lays the channels out otherwise;
                buf = dict(mine.named_buffers())[their_name(n).replace("pos_embed", "pos")]  # same cost):
                assert buf.shape == p.shape, n  # the check uses the release's table in both
                buf.copy_(p)
                continue
            q = mine_params[their_name(n)]
            assert q.shape == p.shape, (n, q.shape, p.shape)
            p.copy_(q)
            copied += 1
    assert copied == len(mine_params), (copied, len(mine_params))
    x = torch.randn(4, LEADS, N_TIME * PATCH)
    torch.manual_seed(5)
    loss_theirs = theirs(x)
    torch.manual_seed(5)
    loss_mine = mine(x)
    loss_theirs.backward()
    loss_mine.backward()
    grad_diff = max((p.grad - mine_params[their_name(n)].grad).abs().max().item()
                    for n, p in theirs.named_parameters() if p.grad is not None)
    return {"parameters_copied": copied, "trainable_params": trainable(mine),
            "loss_release": loss_theirs.item(), "loss_baseline": loss_mine.item(),
            "loss_abs_diff": abs(loss_theirs.item() - loss_mine.item()), "max_grad_abs_diff": grad_diff}


def per_round_ratios(step_ms: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median over rounds of (reference arm's step / arm's step) within the same round: more robust
    than a ratio of medians when the machine's load changes from round to round."""
    out = {}
    for ref in ("release_fp32", "release_bf16"):
        if ref in step_ms:
            out[ref] = {n: round(float(torch.tensor([r / t for r, t in zip(step_ms[ref], ts)]).median()), 2)
                        for n, ts in step_ms.items()}
    return out


def profile_arms(arms: dict[str, Arm], x: Tensor, n_mask: int = 32) -> None:
    """One profiled step per arm (after two warm-up steps): wall time, and the torch profiler's
    self CPU time in matrix products (aten::mm, aten::addmm) against everything else."""
    from torch.profiler import ProfilerActivity, profile

    for name, arm in arms.items():
        for i in range(2):
            arm.step(x, i, 10, n_mask)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall = arm.step(x, 2, 10, n_mask)
        events = prof.key_averages()
        gemm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm")) / 1e3
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        print(f"{name:34s} step {1000 * wall:7.0f} ms: matrix products {gemm:6.0f} ms ({gemm / total:.0%} of op time), "
              f"other ops {total - gemm:6.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--arms", default="release_fp32,release_bf16,medssl_default,medssl_fp32,medssl_bf16,"
                                      "medssl_fp32_factorized,medssl_bf16_dense_mask,medssl_bf16_fused_adamw")
    ap.add_argument("--check-against", type=Path, help="a checkout of the ECG-JEPA release: compare and exit")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--ratios-of", type=Path, help="a JSON this script wrote: print its per-round ratios and exit")
    ap.add_argument("--profile", action="store_true",
                    help="after 2 warm-up steps, profile one step of each arm (32 of 50 patches masked) and print "
                         "its time in matrix products (aten::mm/addmm) and in everything else, then exit")
    args = ap.parse_args()
    if args.ratios_of:
        print(json.dumps(per_round_ratios(json.loads(args.ratios_of.read_text())["step_ms_all"]), indent=1))
        return
    if args.check_against:
        print(json.dumps(check_against(args.check_against), indent=1))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    arms = build_arms(args.arms.split(","))
    torch.manual_seed(0)
    x = torch.randn(args.batch, LEADS, N_TIME * PATCH)
    if args.profile:
        profile_arms(arms, x)
        return
    load = os.getloadavg()
    total = args.warmup + args.steps
    t0 = time.perf_counter()
    counts = mask_counts(total)
    for i in range(total):
        for arm in arms.values():
            dt = arm.step(x, i, total, counts[i])
            if i >= args.warmup:
                arm.times.append(dt)
        print(f"step {i + 1}/{total} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    med = {n: sorted(a.times)[len(a.times) // 2] for n, a in arms.items()}
    ref = {k: med[k] for k in ("release_fp32", "release_bf16") if k in med}
    result = {
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_before": [round(v, 2) for v in load], "load_after": [round(v, 2) for v in os.getloadavg()],
        "size": SIZE, "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "n_masked_per_step": counts,
        "trainable_params": {n: trainable(a.model) for n, a in arms.items()},
        "precision_probe": {n: a.probe for n, a in arms.items() if getattr(a, "probe", None)},
        "samples_per_s": {n: round(args.batch / v, 2) for n, v in med.items()},
        "ms_per_step": {n: round(1000 * v, 1) for n, v in med.items()},
        "step_ms_all": {n: [round(1000 * t) for t in a.times] for n, a in arms.items()},
        "speedup_vs": {r: {n: round(ref[r] / v, 2) for n, v in med.items()} for r in ref},
    }
    result["speedup_per_round_median"] = per_round_ratios(result["step_ms_all"])
    for n in med:
        vs = "  ".join(f"{result['speedup_vs'][r][n]:.2f}x {r}" for r in ref)
        print(f"{n:34s} {result['samples_per_s'][n]:6.2f} samples/s {result['ms_per_step'][n]:8.1f} ms  {vs}")
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
