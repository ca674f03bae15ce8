"""The log-prob paths (`train.logprob_path`, abcx.training.logprobs): abcx's chunked head is exact against full
logits in value and gradient, the paths are interchangeable on a real model carrying TRL's fused head,
and choices that cannot work are refused with the field named."""
import pytest
import torch

pytest.importorskip("trl")
from trl.trainer import add_fused_lm_head  # noqa: E402

from abcx.training import logprobs  # noqa: E402
from abcx.errors import UserError  # noqa: E402


def reference(hidden, weight, bias, targets, inv_t):
    """Full [n x V] logits, log_softmax and autograd: what the chunked head must equal."""
    logits = torch.nn.functional.linear(hidden, weight, bias) * inv_t
    log_p = logits.log_softmax(-1)
    return log_p.gather(-1, targets[:, None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


def leaves(n=37, h=16, v=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    return make(n, h), make(v, h), make(v) if bias else None, torch.randint(0, v, (n,), generator=g)


@pytest.mark.parametrize("chunk", [1, 8, 37, 512])  # one token, uneven chunks, exact fit, one chunk
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("entropy_grad", [True, False])
def test_chunked_head_equals_full_logits_in_value_and_every_gradient(chunk, temperature, entropy_grad):
    hidden, weight, bias, targets = leaves()
    g = torch.Generator().manual_seed(1)
    w_lp, w_h = torch.randn(37, generator=g, dtype=torch.float64), torch.randn(37, generator=g, dtype=torch.float64)

    def run(fn):
        lp, ent = fn(hidden, weight, bias, targets, 1 / temperature)
        out = (lp * w_lp).sum() + ((ent * w_h).sum() if entropy_grad else 0)
        return [lp.detach(), ent.detach(), *torch.autograd.grad(out, (hidden, weight, bias))]

    got = run(lambda *a: logprobs.ChunkedLogProbs.apply(*a, chunk))
    want = run(reference)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_chunked_head_passes_torch_gradcheck_without_bias():
    hidden, weight, _, targets = leaves(n=9, h=5, v=7, bias=False)
    assert torch.autograd.gradcheck(lambda h, w: logprobs.ChunkedLogProbs.apply(h, w, None, targets, 1.3, 4),
                                    (hidden, weight))


def tiny_qwen3(vocab=97):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False,
    ))
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # as GRPOTrainer.__init__ does
    return model


def scored(model, ids, labels):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    model.zero_grad()
    (out.log_probs.sum() + 0.5 * out.entropy.sum()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("path", ["chunked", "full"])
def test_each_path_gives_trls_fused_head_output_on_a_real_model_masked_positions_zero(path):
    ids = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[2, 9:] = -100  # padding
    want, want_grads = scored(tiny_qwen3(), ids, labels)
    model = tiny_qwen3()
    assert logprobs.install(model, path, temperature=1.0, chunk_tokens=4) == path
    got, got_grads = scored(model, ids, labels)
    assert torch.equal(got.label_mask, want.label_mask)
    assert (got.log_probs[~got.label_mask] == 0).all() and (got.entropy[~got.label_mask] == 0).all()
    torch.testing.assert_close(got.log_probs, want.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.entropy, want.entropy, rtol=1e-5, atol=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_installing_a_path_leaves_the_plain_forward_and_generation_unchanged():
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    before = tiny_qwen3()(input_ids=ids).logits
    model = tiny_qwen3()
    logprobs.install(model, "chunked")
    torch.testing.assert_close(model(input_ids=ids).logits, before)
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (2, 9)


def test_an_all_masked_micro_batch_is_a_differentiable_zero():
    model = tiny_qwen3()
    logprobs.install(model, "chunked")
    ids = torch.randint(0, 97, (2, 6))
    out = model(input_ids=ids, labels=torch.full_like(ids, -100), fused_lm_head=True)
    assert (out.log_probs == 0).all()
    out.log_probs.sum().backward()  # no error: still connected to the graph


def test_auto_uses_abcx_chunked_head_on_cpu_and_fused_is_trls_untouched():
    assert logprobs.resolve("auto", torch.device("cpu")) == "chunked"
    model = tiny_qwen3()
    trl_forward = model.forward
    assert logprobs.install(model, "fused") == "fused"
    assert model.forward == trl_forward


def test_a_model_that_scales_its_logits_is_refused_by_abcx_heads_and_auto_falls_back_to_fused():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    assert cfg.final_logit_softcapping
    model = Gemma2ForCausalLM(cfg)
    add_fused_lm_head(model)
    with pytest.raises(UserError, match=r"train.logprob_path=chunked: .*final_logit_softcapping.*fused"):
        logprobs.install(model, "chunked")
    assert logprobs.install(model, "auto") == "fused"


def test_an_unknown_path_is_refused_at_validation_and_the_path_does_not_change_the_run_id():
    from abcx.config.compose import compose
    from abcx.config.identity import run_id

    with pytest.raises(UserError, match=r"train.logprob_path='bogus'; valid: auto, fused, chunked, full"):
        compose(["train.logprob_path=bogus"])
    assert run_id(compose(["train.logprob_path=full"])) == run_id(compose([]))


def test_in_bf16_the_chunked_head_is_at_least_as_accurate_as_bf16_full_logits():
    """Against an fp64 reference: the chunked head accumulates the weight gradient in fp32 across chunks,
    so it may not be worse than autograd through bf16 logits."""
    hidden, weight, _, targets = leaves(n=300, h=32, v=500)
    g = torch.randn(300, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def grads(fn, dtype):
        h, w = hidden.detach().to(dtype).requires_grad_(), weight.detach().to(dtype).requires_grad_()
        lp, _ = fn(h, w, None, targets, 1.0)
        return [x.double() for x in torch.autograd.grad((lp.double() * g).sum(), (h, w))]

    exact = grads(reference, torch.float64)
    chunked = grads(lambda *a: logprobs.ChunkedLogProbs.apply(*a, 64), torch.bfloat16)
    full = grads(lambda *a: logprobs._full_logprobs(*a, 0), torch.bfloat16)
    for c, f, e in zip(chunked, full, exact):
        assert (c - e).abs().max() <= (f - e).abs().max() * 1.05


def test_fp32_master_weights_under_bf16_autocast_train_like_full_logits_under_the_same_autocast():
    """Mixed precision: the forward runs under autocast, the recomputing backward outside it; the
    chunked head must use the same bf16 GEMMs in both and give fp32 gradients for fp32 weights."""
    hidden, weight, _, targets = leaves(n=64, h=32, v=300)
    g = torch.randn(64, generator=torch.Generator().manual_seed(5))

    def grads(fn):
        # the backbone's output under autocast is bf16; the head's master weight stays fp32
        h, w = hidden.detach().bfloat16().requires_grad_(), weight.detach().float().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp, _ = fn(h, w, None, targets, 1.0)
        return torch.autograd.grad((lp.float() * g).sum(), (h, w))

    chunked = grads(lambda *a: logprobs.ChunkedLogProbs.apply(*a, 16))
    full = grads(lambda *a: logprobs._full_logprobs(*a, 0))
    for c, f in zip(chunked, full):
        assert c.dtype == f.dtype  # bf16 for the bf16 hidden states, fp32 for the fp32 weight
        torch.testing.assert_close(c.float(), f.float(), rtol=0.05, atol=0.02)
