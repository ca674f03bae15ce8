"""The rollout/trainer mismatch correction (abcx/methods/correction.py, `correction=<preset>`): its
math on numbers worked by hand, TRL 1.16's four vllm_importance_sampling modes reproduced inside the
real trainer, its composition with `grpo` and `abc_grpo`, one-line refusals of bad settings, and real
short training runs that log the correction's metrics."""
import math

import pytest
import torch

from abcx.config.compose import compose

from abcx.config.identity import config_hash, run_id
from abcx.errors import UserError
from abcx.methods import correction as C
from abcx.methods.correction import Correction

E = math.exp
# log rho = log pi_old - log mu per token; the last token of the second sequence is padding
OLD = [[0.3, -0.9, 1.2], [-0.2, 0.1, 0.4]]
MASK = [[1, 1, 1], [1, 1, 0]]


def apply(**settings):
    old = torch.tensor(OLD, dtype=torch.float64)
    return Correction(**settings).apply(old, torch.zeros_like(old), torch.tensor(MASK, dtype=torch.float64))


def close(tensor, expected, valid=True):
    expected = torch.tensor(expected, dtype=torch.float64)
    if valid:  # the padding position is not compared
        keep = torch.tensor(MASK, dtype=torch.bool)
        tensor, expected = tensor[keep], expected[keep]
    assert torch.allclose(tensor, expected, atol=1e-12, rtol=0), (tensor, expected)


def test_token_tis_truncates_each_tokens_ratio_and_counts_what_it_truncated():
    weight, sums = apply(is_level="token", is_max=2.0)
    close(weight, [[E(0.3), E(-0.9), 2.0], [E(-0.2), E(0.1), 0]])
    assert C.fractions({k: float(v) for k, v in sums.items()}) == pytest.approx({
        "correction/ratio_mean": (E(0.3) + E(-0.9) + E(1.2) + E(-0.2) + E(0.1)) / 5,
        "correction/k3": (E(0.3) - 1.3 + E(-0.9) - 0.1 + E(1.2) - 2.2 + E(-0.2) - 0.8 + E(0.1) - 1.1) / 5,
        "correction/truncated": 1 / 5, "correction/rejected": 0.0,
        "correction/weight_mean": (E(0.3) + E(-0.9) + 2.0 + E(-0.2) + E(0.1)) / 5}, abs=1e-12)
    weight, sums = apply(is_level="token", is_min=0.5, is_max=3.0)  # a lower bound too (TRL's clip_min)
    close(weight, [[E(0.3), 0.5, 3.0], [E(-0.2), E(0.1), 0]])
    assert float(sums["correction/truncated"]) == 2


def test_sequence_is_weighs_every_token_of_a_sequence_by_the_product_of_its_ratios():
    weight, _ = apply(is_level="sequence", is_max=1.5)
    close(weight, [[1.5] * 3, [E(-0.1)] * 3])  # prod = e^.6 = 1.82 capped; e^-.1 (the padding counts as 1)


@pytest.mark.parametrize("level,low,high,kept", [
    ("token", 0.5, 3.0, [[1, 0, 0], [1, 1, 1]]),  # rho .41 and 3.32 leave [.5, 3]
    ("sequence", 0.5, 1.5, [[0] * 3, [1] * 3]),  # prod 1.82 > 1.5; .90 inside
    ("geometric", 0.9, 1.1, [[0] * 3, [1] * 3]),  # exp(mean) 1.22 > 1.1; .95 inside
    ("k3", None, 0.1, [[0] * 3, [1] * 3]),  # mean k3 .49 > .1; .012 inside
    ("k3", None, 0.01, [[0] * 3, [0] * 3]),  # .012 > .01 (mean rho - 1 would be -.04)
])
def test_rejection_drops_tokens_or_whole_sequences_outside_the_bounds(level, low, high, kept):
    weight, sums = apply(rs_level=level, rs_min=low, rs_max=high)
    close(weight, kept)
    assert float(sums["correction/rejected"]) == 5 - sum(k for row, m in zip(kept, MASK) for k, v in zip(row, m) if v)


def test_rejection_and_weight_compose_as_a_product():
    weight, _ = apply(is_level="token", rs_level="token", rs_min=0.5, rs_max=3.0)  # TRL's token_mask
    close(weight, [[E(0.3), 0, 0], [E(-0.2), E(0.1), 0]])


def test_a_missing_behaviour_log_prob_means_no_correction_for_that_token():
    old = torch.tensor(OLD, dtype=torch.float64)
    behaviour = torch.zeros_like(old)
    behaviour[0, 2] = math.nan  # vLLM could not give it
    weight, _ = Correction(is_level="token", is_max=2.0).apply(old, behaviour, torch.tensor(MASK, dtype=torch.float64))
    assert float(weight[0, 2]) == 1.0 and float(weight[0, 0]) == pytest.approx(E(0.3))


def test_without_a_separate_behaviour_policy_rho_is_one_and_nothing_changes():
    old = torch.tensor(OLD, dtype=torch.float64)
    for preset in ("token_tis", "token_mis", "seq_tis", "seq_mis", "geo_rs", "k3_rs", "trl_default"):
        weight, sums = Correction.of(compose([f"correction={preset}"]).correction).apply(old, old, torch.ones_like(old))
        assert torch.all(weight == 1) and float(sums["correction/k3_sum"]) == 0 and float(sums["correction/rejected"]) == 0


# ---------- inside the real trainer ----------

def trl_ratio(inputs, mode, low, high):
    """TRL 1.16's vllm_importance_sampling_ratio (GRPOTrainer._generate_and_score_completions), written out."""
    diff = (inputs["old_per_token_logps"] - inputs["sampling_per_token_logps"]) * inputs["completion_mask"]
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=low, max=high)
    return ratio.masked_fill((ratio < (low or -math.inf)) | (ratio > high), 0.0)


SETTINGS = {"token_truncate": dict(is_level="token", is_min=0.8, is_max=1.15),
            "token_mask": dict(is_level="token", rs_level="token", rs_min=0.8, rs_max=1.15),
            "sequence_truncate": dict(is_level="sequence", is_min=0.5, is_max=2.0),
            "sequence_mask": dict(is_level="sequence", rs_level="sequence", rs_max=2.0)}


@pytest.mark.parametrize("mode", sorted(SETTINGS))
def test_the_correction_reproduces_each_of_trls_vllm_importance_sampling_modes(tmp_path, mode):
    from trl import GRPOTrainer

    from tests.test_trl_equivalence import GRPO_BOUNDS, loss_and_grads, make_inputs, make_trainer

    trainer = make_trainer(tmp_path, "dapo", "token", GRPO_BOUNDS)
    inputs = make_inputs(trainer, 11)
    settings = SETTINGS[mode]
    low, high = settings.get("is_min", settings.get("rs_min")), settings.get("is_max", settings.get("rs_max"))
    trl_inputs = {**inputs, "importance_sampling_ratio": trl_ratio(inputs, mode, low, high)}
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
    ref_loss, ref_grads = loss_and_grads(GRPOTrainer._compute_loss, trainer, trl_inputs)
    trainer.correction = Correction(**settings)
    del inputs["importance_sampling_ratio"]  # abcx computes its own from the two log-probs
    from abcx.training.trainer import AbcxGRPOTrainer

    our_loss, our_grads = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
    assert abs(ref_loss.item() - our_loss.item()) <= 1e-6 * max(1.0, abs(ref_loss.item()))
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(ref_grads, our_grads))
    _, sums = trainer.correction.apply(inputs["old_per_token_logps"], inputs["sampling_per_token_logps"],
                                       inputs["completion_mask"])
    acted = float(sums["correction/truncated"] + sums["correction/rejected"])
    assert 0 < acted < float(sums["correction/tokens"])  # the bounds act on some tokens, not on all


@pytest.mark.parametrize("method", ["grpo", "abc_grpo"])
def test_the_correction_composes_with_a_method_as_a_product_on_its_per_token_loss(tmp_path, method):
    """The method's loss with the correction equals its loss with TRL's vLLM ratio set to the
    correction's weight: the correction is one factor, whatever the clipping rule."""
    from abcx.methods.runtime import MethodRun
    from abcx.training.trainer import AbcxGRPOTrainer
    from tests.test_trl_equivalence import loss_and_grads, make_inputs, make_trainer

    params = {"eps1": 0.15, "eps2": 0.25, "eps3": 0.35, "eps4": 0.1} if method == "abc_grpo" else {"eps_high": 0.3}
    trainer = make_trainer(tmp_path, "dapo", "token", method=MethodRun(method, params))
    inputs = make_inputs(trainer, 12)
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
    trainer.correction = Correction.of(compose(["correction=seq_mis"]).correction)
    weight, _ = trainer.correction.apply(inputs["old_per_token_logps"], inputs["sampling_per_token_logps"],
                                         inputs["completion_mask"])
    corrected = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, inputs)
    trainer.correction = Correction()
    reference = loss_and_grads(AbcxGRPOTrainer._compute_loss, trainer, {**inputs, "importance_sampling_ratio": weight})
    assert corrected[0].item() == pytest.approx(reference[0].item(), rel=1e-6, abs=1e-9)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(corrected[1], reference[1]))
    assert (weight == 0).any() and (weight != 0).any()  # seq_mis rejected some sequences and kept others


# ---------- config ----------

@pytest.mark.parametrize("overrides,message", [
    (["correction=tis"], "is not a config; did you mean correction=seq_tis? valid correction choices: geo_rs, k3_rs, none"),
    (["correction.is_level=seq"], "correction.is_level='seq' is not valid; valid: none, token, sequence"),
    (["correction=token_tis", "correction.is_max=0.5"], "correction.is_max=0.5 is below 1"),
    (["correction=token_mis", "correction.rs_min=1.2"], "correction.rs_min=1.2 is above 1"),
    (["correction=token_tis", "correction.is_max=-2"], "correction.is_max=-2.0 is not valid"),
    (["correction=token_tis", "correction.is_max=inf"], "correction.is_max=inf is not valid"),
    (["correction.rs_max=2"], "correction.rs_max is set but correction.rs_level=none"),
    (["correction=k3_rs", "correction.rs_min=0.5"], "correction.rs_level=k3 takes only an upper bound"),
    (["correction=geo_rs", "correction.rs_min=null", "correction.rs_max=null"], "correction.rs_level=geometric needs a bound"),
])
def test_a_bad_correction_is_one_line_naming_the_field(overrides, message):
    with pytest.raises(UserError) as err:
        compose(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_no_correction_leaves_run_ids_as_they_were_and_a_correction_changes_them():
    from abcx.config.identity import to_dict

    base = compose([])
    without_the_group = {k: v for k, v in to_dict(base).items() if k != "correction"}
    assert "correction" in base and config_hash(without_the_group) == config_hash(base)
    ids = {run_id(compose(o)) for o in ([], ["correction=token_tis"], ["correction=token_tis", "correction.is_max=3"])}
    assert len(ids) == 3


# ---------- real training ----------

FAST = ["train.max_steps=2", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
        "train.save_steps=100", "eval.at_end=false", "logger=none"]
CORRECTION_METRICS = ("correction/ratio_mean", "correction/k3", "correction/truncated", "correction/rejected",
                      "correction/weight_mean")


@pytest.mark.slow
@pytest.mark.parametrize("method,preset", [("grpo", "token_tis"), ("abc_grpo", "seq_mis")])
def test_a_run_with_a_correction_trains_and_logs_its_metrics_beside_the_methods(tmp_path, tiny_model_path,
                                                                                  method, preset, capsys):
    from abcx.training.train import train

    record = train(compose(FAST + [f"method={method}", f"correction={preset}", f"results_dir={tmp_path}"]), quiet=True)
    assert record.status()["state"] == "finished"
    rows = [r for r in record.metrics() if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert all(k in row for k in CORRECTION_METRICS + ("clip/q1", "clip/q4", "grad/share_q1", "grad/share_in"))
        # on CPU there is no vLLM: the behaviour policy is pi_old itself, so rho is exactly 1
        assert row["correction/ratio_mean"] == 1.0 and row["correction/k3"] == 0.0
        assert row["correction/rejected"] == row["correction/truncated"] == 0.0 and row["correction/weight_mean"] == 1.0
    assert record.meta()["config_hash"] != config_hash(compose(FAST + [f"method={method}", f"results_dir={tmp_path}"]))
    assert "rho = 1" in capsys.readouterr().err
