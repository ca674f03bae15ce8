"""Where the trainer's per-token log-probs and entropies come from: which LM-head path (`train.logprob_path`).

TRL 1.16's GRPOTrainer patches the policy with `add_fused_lm_head` and always calls
`model(..., labels=labels, fused_lm_head=True)`. abcx keeps that call and re-routes it:

- `fused`: TRL's own head. It projects [4,096 tokens x 32,768 vocab] tiles and folds each into
  online-logsumexp statistics (a Triton kernel on CUDA, torch ops elsewhere). On CPU the torch fallback
  holds several tile-sized temporaries, and below 32,768 vocab the tile *is* the whole logits, so it
  takes more memory than full logits there (bench/bench_logprobs.py).
- `chunked`: abcx's own (`ChunkedLogProbs` below): whole vocabulary, a few hundred tokens at a time
  (a 64 MB fp32 tile), recomputed in the backward. Extra memory is bounded at any vocab and length.
- `full`: the [tokens x vocab] fp32 logits, `log_softmax` and autograd. The reference the others are
  tested against, and the fastest where memory does not matter.
- `auto`: `fused` where TRL's Triton kernel runs (CUDA/XPU) and wherever abcx's heads do not apply
  (logit scaling or soft-capping, MoE router loss, vision-language models, ZeRO-3); else `chunked`.

All paths score only the positions whose label is not -100, and return TRL's `FusedCausalLMOutput`
so TRL's `_get_per_token_logps_and_entropies` reads them unchanged.
"""
from __future__ import annotations

import types

from abcx.config.domains import LOGPROB_PATHS as PATHS  # noqa: F401 - the paths, listed where the config checks them
from abcx.config.domains import check_logprob_path as check_path

# One fp32 [tokens x vocab] tile is kept under this size (two live at once in the backward), so the
# head's extra memory is bounded whatever the sequence length: 110 tokens at vocab 151,936.
TILE_BYTES = 64 * 2**20


def chunk_tokens_for(vocab: int) -> int:
    return max(16, TILE_BYTES // (4 * vocab))


def resolve(path: str, device) -> str:
    """`auto` -> the concrete path for a model on `device`."""
    check_path(path)
    if path != "auto":
        return path
    from abcx.training.trl_compat import use_triton

    return "fused" if use_triton(device) else "chunked"


def _unsupported_reason(model) -> str | None:
    """abcx's own heads do the plain `hidden @ W.T (+ b)`; TRL's fused head also handles these."""
    cfg = model.config.get_text_config()
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(cfg, attr, None) not in (None, 1.0):
            return f"{cfg.model_type} scales its logits ({attr})"
    if getattr(cfg, "output_router_logits", False):
        return f"{cfg.model_type} is a mixture of experts (router loss)"
    if cfg is not model.config:
        return "vision-language models are only supported by the fused path"
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():  # the head would have to be gathered again in the recomputing backward
        return "DeepSpeed ZeRO-3 shards the LM head"
    return None


def install(model, path: str, temperature: float = 1.0, chunk_tokens: int | None = None) -> str:
    """Route `model(..., fused_lm_head=True)` (TRL's call) to `path`; returns the concrete path.

    `model` must already carry TRL's fused head (GRPOTrainer.__init__ adds it); `fused` leaves it as is.
    """
    from abcx.errors import UserError

    concrete = resolve(path, model.get_output_embeddings().weight.device)
    if concrete == "fused":
        return concrete
    reason = _unsupported_reason(model)
    if reason:
        if path == "auto":
            return "fused"
        raise UserError(f"train.logprob_path={path}: {reason}; use train.logprob_path=fused (or auto)")
    from abcx.training.trl_compat import fused_output_class

    FusedCausalLMOutput = fused_output_class()  # noqa: N806 - TRL's class

    trl_forward = model.forward  # TRL's wrapper: without fused_lm_head it runs the model's own forward
    chunk_tokens = chunk_tokens or chunk_tokens_for(model.get_output_embeddings().weight.shape[0])
    scorer = ChunkedLogProbs.apply if concrete == "chunked" else _full_logprobs

    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            return trl_forward(*args, labels=labels, num_items_in_batch=num_items_in_batch, **kwargs)
        if kwargs.get("shift_labels") is not None:
            raise UserError(f"train.logprob_path={concrete} does not support pre-shifted labels "
                            "(context parallelism); use train.logprob_path=fused")
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:]
        mask = labels != -100
        head = self.get_output_embeddings()
        if type(head.weight).__name__ == "DTensor":  # FSDP2 wraps after install: caught on the first call
            raise UserError(f"train.logprob_path={concrete}: FSDP shards the LM head; use train.logprob_path=fused")
        logps, entropy = scorer(hidden[mask], head.weight, head.bias, labels[mask], 1.0 / temperature, chunk_tokens)
        # masked_scatter keeps an all-masked micro-batch connected to the graph (a zero, not an error)
        logps, entropy = (mask.new_zeros(mask.shape, dtype=x.dtype).masked_scatter(mask, x) for x in (logps, entropy))
        loss = -logps.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=logps, entropy=entropy, label_mask=mask)

    model.forward = types.MethodType(forward, model)
    return concrete


def _full_logprobs(hidden, weight, bias, targets, inv_t: float, chunk_tokens: int):
    import torch

    logits = torch.nn.functional.linear(hidden, weight, bias).to(_acc_dtype(hidden)) * inv_t
    log_p = logits.log_softmax(-1)
    logps = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return logps, entropy


def _tile(hidden, weight, bias, inv_t: float):
    """inv_t * (hidden @ W.T + b) for a chunk, in the accumulation dtype; W and b already in the compute dtype."""
    import torch

    z = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias).to(_acc_dtype(hidden))
    return z.mul_(inv_t) if inv_t != 1.0 else z


def _compute_dtype(hidden):
    """The GEMM dtype: autocast's where it is on (fp32 master weights under bf16 autocast), else the input's.
    Recorded in the forward because the backward runs outside autocast."""
    import torch

    kind = hidden.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype


def _cast(weight, bias, dtype):
    return weight.to(dtype), None if bias is None else bias.to(dtype)


def _acc_dtype(t):
    """fp32 for fp32/bf16/fp16 inputs (as TRL's paths), fp64 for fp64 (exact gradient checks)."""
    import torch

    return torch.promote_types(t.dtype, torch.float32)


def _chunked_forward(hidden, weight, bias, targets, inv_t, chunk_tokens):
    import torch

    n = hidden.shape[0]
    logps = hidden.new_empty(n, dtype=_acc_dtype(hidden))
    entropy = torch.empty_like(logps)
    log_z = torch.empty_like(logps)
    for s in range(0, n, chunk_tokens):
        e = min(s + chunk_tokens, n)
        z = _tile(hidden[s:e], weight, bias, inv_t)
        lz = torch.logsumexp(z, -1)
        log_z[s:e] = lz
        logps[s:e] = z.gather(-1, targets[s:e].unsqueeze(-1)).squeeze(-1) - lz
        # H = logZ - sum_v p_v z_v, with p = exp(z - logZ); exp in place over z's buffer after one product
        pz = (z - lz.unsqueeze(-1)).exp_().mul_(z)
        entropy[s:e] = lz - pz.sum(-1)
    return logps, entropy, log_z


def _make_function():  # defined on first use so that importing abcx.training.logprobs needs no torch
    import torch

    class ChunkedLogProbsFunction(torch.autograd.Function):
        """Per-token log p(target) and entropy of softmax(inv_t * (hidden @ W.T + b)), [n] each.

        Backward, per token chunk, from the recomputed log-probabilities log_p and p = exp(log_p):
          d logp_t / dz_v = [v == t] - p_v
          d H / dz_v      = -p_v (log_p_v + H)
        and dz = inv_t * d(hidden @ W.T + b). Weight and bias gradients accumulate in fp32
        (fp64 for fp64 inputs).
        """

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, inv_t, chunk_tokens):
            ctx.compute_dtype = _compute_dtype(hidden)
            w, b = _cast(weight, bias, ctx.compute_dtype)
            logps, entropy, log_z = _chunked_forward(hidden, w, b, targets, inv_t, chunk_tokens)
            ctx.save_for_backward(hidden, weight, bias, targets, log_z, entropy)
            ctx.inv_t, ctx.chunk_tokens = inv_t, chunk_tokens
            # The trainer only reads entropies (metrics, top-entropy mask): skip that gradient term then
            ctx.set_materialize_grads(False)
            return logps, entropy

        @staticmethod
        def backward(ctx, grad_logps, grad_entropy):
            hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
            if grad_logps is None and grad_entropy is None:
                return None, None, None, None, None, None
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            grad_h = torch.empty_like(hidden) if need_h else None
            acc = _acc_dtype(hidden)
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
            w, b = _cast(weight, bias, ctx.compute_dtype)
            n = hidden.shape[0]
            for s in range(0, n, ctx.chunk_tokens):
                e = min(s + ctx.chunk_tokens, n)
                log_p = _tile(hidden[s:e], w, b, ctx.inv_t).sub_(log_z[s:e].unsqueeze(-1))
                p = log_p.exp()
                # grad_z = -p * (g_logp + g_H * (log_p + H)), then + g_logp at the target; built in log_p's buffer
                grad_z = log_p
                if grad_entropy is not None:
                    grad_z.add_(entropy[s:e].unsqueeze(-1)).mul_(grad_entropy[s:e].unsqueeze(-1))
                    if grad_logps is not None:
                        grad_z.add_(grad_logps[s:e].unsqueeze(-1))
                else:
                    grad_z.copy_(grad_logps[s:e].unsqueeze(-1).expand_as(grad_z))
                grad_z.mul_(p).neg_()
                if grad_logps is not None:
                    rows = torch.arange(e - s, device=grad_z.device)
                    grad_z[rows, targets[s:e]] += grad_logps[s:e]
                if ctx.inv_t != 1.0:
                    grad_z.mul_(ctx.inv_t)
                if need_h:
                    grad_h[s:e] = (grad_z.to(w.dtype) @ w).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(grad_z.t(), hidden[s:e].to(acc))
                if need_b:
                    grad_b += grad_z.sum(0)
            grad_w = grad_w.to(weight.dtype) if need_w else None
            grad_b = grad_b.to(bias.dtype) if need_b else None
            return grad_h, grad_w, grad_b, None, None, None

    return ChunkedLogProbsFunction


class ChunkedLogProbs:
    """`ChunkedLogProbs.apply(hidden [n,H], weight [V,H], bias [V] | None, targets [n], inv_t, chunk_tokens)`
    -> (log-probs [n], entropies [n]), fp32, without a [n x V] tensor: at most two [chunk_tokens x V] tiles
    (chunk_tokens defaults to a 64 MB fp32 tile)."""

    _fn = None

    @classmethod
    def apply(cls, hidden, weight, bias, targets, inv_t: float, chunk_tokens: int | None = None):
        if cls._fn is None:
            cls._fn = _make_function()
        chunk_tokens = chunk_tokens or chunk_tokens_for(weight.shape[0])
        return cls._fn.apply(hidden, weight, bias, targets, inv_t, chunk_tokens)
