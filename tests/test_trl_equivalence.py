"""abcx's loss path (every method through PolicyTerms and one surrogate) equals TRL GRPOTrainer's own
`_compute_loss` (loss value and every parameter gradient, to 1e-6): the `grpo` preset for each loss
type and ratio level, and with TRL's KL, vLLM importance-sampling and off-policy-mask features on;
dapo, two_sided, gspo, and TRL's other loss types cispo, sapo, vespo and luspo with the aggregation
TRL ties each to."""
import math

import pytest
import torch

pytest.importorskip("trl")
from trl import GRPOTrainer  # noqa: E402

from abcx.config.trl_args import grpo_config  # noqa: E402
from abcx.methods import clip as C, stats as S  # noqa: E402
from abcx.methods.runtime import MethodRun, bounds_for  # noqa: E402
from abcx.training.trainer import AbcxGRPOTrainer  # noqa: E402
from abcx.training.trl_compat import check  # noqa: E402


def test_installed_trl_still_has_every_private_piece_abcx_relies_on():
    check()  # raises TRLIncompatible naming each missing method, parameter or attribute


def test_the_trl_guard_names_what_an_upgrade_removed():
    import trl

    from abcx.training.trl_compat import TRLIncompatible

    saved = trl.GRPOTrainer.__dict__["get_off_policy_mask"]  # the staticmethod object itself
    del trl.GRPOTrainer.get_off_policy_mask
    try:
        with pytest.raises(TRLIncompatible, match="GRPOTrainer.get_off_policy_mask is gone"):
            check()
    finally:
        trl.GRPOTrainer.get_off_policy_mask = saved


def make_trainer(tmp_path, loss_type, level, bounds=None, logprob_path="auto", method=None, **overrides):
    from datasets import Dataset
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from abcx.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    ))
    # TRL defaults gradient_checkpointing to True, under the name transformers deprecates; grpo_config
    # passes it as activation_checkpointing, as abcx does for its runs, so the suite stays warning-free.
    args = grpo_config({
        "output_dir": str(tmp_path), "gradient_checkpointing": False, "use_cpu": True, "bf16": False, "report_to": [],
        "loss_type": loss_type, "importance_sampling_level": level, "epsilon": 0.2, "epsilon_high": 0.28, "per_device_train_batch_size": 8,
        "num_generations": 8, "max_completion_length": 10, **overrides,
    })
    data = Dataset.from_dict({"prompt": ["1+1="] * 8})
    trainer = AbcxGRPOTrainer(model=model, args=args, processing_class=tok, train_dataset=data,
                              reward_funcs=[lambda completions, **_: [0.0] * len(completions)], bounds=bounds,
                              method=method, logprob_path=logprob_path)
    trainer.current_gradient_accumulation_steps = 2
    return trainer


def make_inputs(trainer, seed=0, b=8, p=4, t=10):
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    completion_mask = torch.ones(b, t, dtype=torch.long)
    for i in range(b):
        completion_mask[i, int(torch.randint(3, t + 1, (1,), generator=g)):] = 0
    inputs = {
        "prompt_ids": torch.randint(4, vocab, (b, p), generator=g),
        "prompt_mask": torch.ones(b, p, dtype=torch.long),
        "completion_ids": torch.randint(4, vocab, (b, t), generator=g),
        "completion_mask": completion_mask,
        "advantages": torch.randn(b, generator=g),
        "num_items_in_batch": completion_mask.sum() * 3,
    }
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], completion_mask], 1), t)
    # Old log-probs spread widely enough that every quadrant has tokens beyond its bound.
    inputs["old_per_token_logps"] = logps + torch.randn(b, t, generator=g) * 0.4
    inputs["ref_per_token_logps"] = logps + torch.randn(b, t, generator=g) * 0.1
    inputs["sampling_per_token_logps"] = logps + torch.randn(b, t, generator=g) * 0.1
    inputs["importance_sampling_ratio"] = torch.exp(torch.randn(b, t, generator=g) * 0.1)
    return inputs


def loss_and_grads(fn, trainer, inputs):
    trainer.model.zero_grad()
    loss = fn(trainer, trainer.model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def assert_same(trainer, inputs):
    ref_loss, ref_grads = loss_and_grads(GRPOTrainer._compute_loss, trainer, inputs)
    our_loss, our_grads = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
    assert abs(ref_loss.item() - our_loss.item()) <= 1e-6 * max(1.0, abs(ref_loss.item()))
    assert len(ref_grads) == len(our_grads) > 0
    assert sum(g.abs().sum().item() for g in ref_grads) > 0  # a comparison of zeros proves nothing
    for a, b in zip(ref_grads, our_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    return ref_loss


GRPO_BOUNDS = bounds_for("grpo", {"eps_low": 0.2, "eps_high": 0.28})


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_grpo_preset_matches_trl_loss_and_gradients(tmp_path, loss_type, level):
    trainer = make_trainer(tmp_path, loss_type, level, GRPO_BOUNDS)
    for seed in range(3):
        loss = assert_same(trainer, make_inputs(trainer, seed))
        assert math.isfinite(loss.item()) and loss.item() != 0.0


def test_grpo_preset_matches_trl_with_kl_vllm_is_and_off_policy_mask(tmp_path):
    trainer = make_trainer(tmp_path, "dapo", "token", GRPO_BOUNDS, off_policy_mask_threshold=0.05)
    trainer.beta = 0.04
    trainer.use_vllm = True
    trainer.vllm_importance_sampling_correction = True
    assert_same(trainer, make_inputs(trainer, 7))


def test_two_sided_preset_matches_trls_delta_option(tmp_path):
    bounds = bounds_for("two_sided", {"eps_low": 0.2, "eps_high": 0.28, "delta": 1.5})
    trainer = make_trainer(tmp_path, "bnpo", "token", bounds, delta=1.5)
    assert_same(trainer, make_inputs(trainer, 3))


def test_dapo_preset_matches_trls_clip_higher(tmp_path):
    trainer = make_trainer(tmp_path, "dapo", "token", method=MethodRun("dapo"))  # TRL: 0.2 / 0.28
    assert_same(trainer, make_inputs(trainer, 4))


@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.05, 0.1)])  # the paper's, and wide enough to keep tokens
def test_gspo_preset_matches_trls_sequence_level_clip(tmp_path, eps):
    trainer = make_trainer(tmp_path, "grpo", "sequence", epsilon=eps[0], epsilon_high=eps[1],
                           method=MethodRun("gspo", {"eps_low": eps[0], "eps_high": eps[1]}))
    assert trainer.method.level == "sequence"
    assert_same(trainer, make_inputs(trainer, 6))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_cispo_matches_trls_cispo_loss(tmp_path, level):
    # TRL's cispo caps r at epsilon_high itself; 1.2 caps a good share of these ratios
    trainer = make_trainer(tmp_path, "cispo", level, epsilon_high=1.2,
                           method=MethodRun("cispo", {"eps_max": 1.2, "importance_sampling_level": level}))
    assert_same(trainer, make_inputs(trainer, 8))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_sapo_matches_trls_soft_gate(tmp_path, level):
    trainer = make_trainer(tmp_path, "sapo", level, sapo_temperature_pos=0.7, sapo_temperature_neg=1.3,
                           method=MethodRun("sapo", {"tau_pos": 0.7, "tau_neg": 1.3, "importance_sampling_level": level}))
    assert_same(trainer, make_inputs(trainer, 9))


@pytest.mark.parametrize("vllm_is", [False, True])
def test_vespo_matches_trls_gamma_weighted_loss(tmp_path, vllm_is):
    trainer = make_trainer(tmp_path, "vespo", "token", vespo_k_pos=1.5, vespo_lambda_pos=2.5, vespo_k_neg=2.5,
                           vespo_lambda_neg=1.5,
                           method=MethodRun("vespo", {"k_pos": 1.5, "lambda_pos": 2.5, "k_neg": 2.5, "lambda_neg": 1.5}))
    inputs = make_inputs(trainer, 10, t=4)  # short sequences: w = prod of ratios stays where phi is not ~0
    if vllm_is:  # TRL folds vLLM's IS ratio into w (and not into the loss); padding carries ratio 1
        trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
        inputs["importance_sampling_ratio"] = inputs["importance_sampling_ratio"] ** inputs["completion_mask"]
    else:  # without vLLM the batch carries no IS ratio
        del inputs["importance_sampling_ratio"]
    assert_same(trainer, inputs)


def test_luspo_matches_trls_length_weighted_sequence_loss(tmp_path):
    trainer = make_trainer(tmp_path, "luspo", "sequence", epsilon=0.05, epsilon_high=0.1,
                           method=MethodRun("luspo", {"eps_low": 0.05, "eps_high": 0.1}))
    assert trainer.aggregation == "luspo"
    assert_same(trainer, make_inputs(trainer, 11))


def test_abc_differs_from_trl_grpo_when_ratios_leave_the_band(tmp_path):
    trainer = make_trainer(tmp_path, "bnpo", "token", C.Bounds(0.2, 0.2, 0.2, 0.2))
    trainer.epsilon_high = 0.2
    inputs = make_inputs(trainer, 1)
    ref, _ = loss_and_grads(GRPOTrainer._compute_loss, trainer, inputs)
    ours, _ = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
    assert abs(ref.item() - ours.item()) > 1e-4


def test_quadrant_metrics_are_logged_as_fractions(tmp_path):
    trainer = make_trainer(tmp_path, "dapo", "token", C.Bounds(0.2, 0.2, 0.2, 0.2))
    trainer.model.train()
    AbcxGRPOTrainer._compute_loss(trainer, trainer.model, make_inputs(trainer, 2))
    logs = {}
    trainer.log(logs)
    quads = [logs[f"clip/q{i}"] for i in range(1, 5)]
    assert all(0 < q < 1 for q in quads)
    assert logs["clip/clipped"] == pytest.approx(sum(quads))
    assert logs["ratio/min"] < 0.8 < 1.2 < logs["ratio/max"]


def test_trls_clip_ratios_are_abcx_q1_and_q3_at_every_step_with_zero_advantage_groups(tmp_path):
    """Stock TRL and abcx's grpo on the same settings and batch, one log per step: TRL's high_mean (A > 0,
    r > 1 + epsilon_high) is abcx's Q1 and its low_mean (A < 0, r < 1 - epsilon) abcx's Q3. Groups whose
    rewards are all equal (A = 0) have tokens outside the band too: a clip event needs A != 0, so they
    are in neither (abcx logs them as clip/zero_adv_out)."""
    trainer = make_trainer(tmp_path, "dapo", "token", GRPO_BOUNDS)
    trainer.model.train()
    for step in range(4):
        inputs = make_inputs(trainer, 20 + step)
        inputs["advantages"][step % 3::3] = 0.0  # a third of the sequences carry no gradient
        GRPOTrainer._compute_loss(trainer, trainer.model, inputs)  # TRL's own clip-ratio logging
        AbcxGRPOTrainer._compute_loss(trainer, trainer.model, inputs)
        logs = {}
        trainer.log(logs)  # abcx's quadrants and TRL's averaged metrics of this step, side by side
        assert logs["clip/q1"] == pytest.approx(logs["clip_ratio/high_mean"], rel=1e-6, abs=1e-9)
        assert logs["clip/q3"] == pytest.approx(logs["clip_ratio/low_mean"], rel=1e-6, abs=1e-9)
        assert logs["clip/q1"] > 0 and logs["clip/q3"] > 0 and logs["clip/zero_adv_out"] > 0


METHOD_CASES = {  # method -> (TRL loss type, ratio level)
    "grpo": ("dapo", "token"), "abc_grpo": ("dapo", "token"), "gspo": ("grpo", "sequence"), "cispo": ("cispo", "token"),
    "sapo": ("sapo", "token"), "vespo": ("vespo", "token"), "luspo": ("luspo", "sequence"),
    "abc_adaptive": ("dapo", "token"),
}


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_every_method_logs_the_same_gradient_share_and_token_metrics(tmp_path, name):
    loss_type, level = METHOD_CASES[name]
    params = {"eps_low": 0.05, "eps_high": 0.1} if name in ("gspo", "luspo") else {"eps_max": 1.2} if name == "cispo" else {}
    trainer = make_trainer(tmp_path, loss_type, level, method=MethodRun(name, params))
    trainer.model.train()
    AbcxGRPOTrainer._compute_loss(trainer, trainer.model, make_inputs(trainer, 12, t=4 if name == "vespo" else 10))
    logs = {}
    trainer.log(logs)
    shares = [logs[f"grad/share_q{i}"] for i in range(1, 5)] + [logs["grad/share_zero_adv_out"], logs["grad/share_in"]]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1.0)
    assert 0 <= logs["grad/zeroed"] + logs["grad/scaled_down"] <= 1
    assert logs["grad/zeroed"] == pytest.approx(logs["clip/clipped"])
    if name in ("abc_grpo", "abc_adaptive"):  # every out-of-band token clipped: no gradient reaches Q1..Q4
        assert sum(shares[:4]) == 0 and logs["grad/zeroed"] > 0
    if name == "grpo":  # GRPO's blind spots: Q2 and Q4 keep gradient, Q1 and Q3 get none
        assert shares[0] == shares[2] == 0 < shares[1] and shares[3] > 0
    if name in ("sapo", "cispo"):  # soft gate / capped weight: nothing zeroed, some tokens scaled down
        assert logs["grad/zeroed"] == 0 < logs["grad/scaled_down"]
    if trainer.method.bounds(0) is not None:
        assert [logs[f"eps/eps{i}"] for i in range(1, 5)] == list(vars(trainer.method.bounds(0)).values())


@pytest.mark.parametrize("path", ["fused", "chunked", "full"])
def test_every_log_prob_path_equals_full_logits_in_value_and_gradient_inside_the_trainer(tmp_path, path):
    """Each `train.logprob_path` the trainer can use (TRL's fused LM head, abcx's chunked head, full
    logits) gives the same per-token log-probs, entropies and parameter gradients as full logits
    computed by hand from the model's own forward."""
    trainer = make_trainer(tmp_path, "dapo", "token", GRPO_BOUNDS, logprob_path=path)
    assert trainer.logprob_path == path
    inputs = make_inputs(trainer, 5)
    model, t = trainer.model, inputs["completion_ids"].size(1)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    # TRL scores completion tokens only (padding reads 0): compare where the completion mask is 1.
    weights = torch.randn(ids.size(0), t, generator=torch.Generator().manual_seed(0)) * inputs["completion_mask"]

    def grads_of(fn):
        model.zero_grad()
        logps, entropy = fn()
        ((logps + entropy) * weights).sum().backward()
        return logps.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def fused():
        logps, entropy, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, t, compute_entropy=True)
        return logps, entropy

    def full():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -t - 1:-1].float()
        logp_all = torch.log_softmax(logits, -1)
        logps = logp_all.gather(-1, ids[:, -t:].unsqueeze(-1)).squeeze(-1)
        return logps, -(logp_all.exp() * logp_all).sum(-1)

    a, b = grads_of(fused), grads_of(full)
    on = inputs["completion_mask"].bool()
    assert torch.allclose(a[0][on], b[0][on], atol=1e-5) and torch.allclose(a[1][on], b[1][on], atol=1e-5)
    assert len(a[2]) == len(b[2]) > 0
    for ga, gb in zip(a[2], b[2]):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
