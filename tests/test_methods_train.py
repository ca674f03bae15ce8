"""Every registered method trains on the tiny testbed with the real TRL trainer and logs the same
metrics; abc_adaptive's controller state survives a real resume exactly."""
import math

import pytest

from abcx import methods as M
from abcx.config.compose import compose
from abcx.record import RunRecord
from abcx.training.train import train

FAST = ["train.max_steps=2", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
        "train.save_steps=100", "eval.at_end=false", "logger=none"]
UNIFORM = [f"clip/q{i}" for i in range(1, 5)] + [f"grad/share_q{i}" for i in range(1, 5)] + \
    ["grad/share_zero_adv_out", "grad/share_in", "grad/zeroed", "grad/scaled_down", "clip/clipped", "clip/zero_adv_out"]
SHARES = [f"grad/share_q{i}" for i in range(1, 5)] + ["grad/share_zero_adv_out", "grad/share_in"]


@pytest.mark.slow
@pytest.mark.parametrize("name", M.names())
def test_every_method_trains_two_steps_and_logs_the_uniform_metrics(tmp_path, tiny_model_path, name):
    record = train(compose(FAST + [f"method={name}", f"results_dir={tmp_path}"]), quiet=True)
    assert record.status()["state"] == "finished"
    rows = [r for r in record.metrics() if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"]) and all(key in row for key in UNIFORM), sorted(row)
        total = sum(row[key] for key in SHARES)
        assert total == pytest.approx(1.0, abs=1e-9) or total == 0  # 0: no gradient at all
    if M.get(name).bounds is not None or M.get(name).controller is not None:
        assert all(f"eps/eps{i}" in rows[0] for i in range(1, 5))


ADAPTIVE = ["train.max_steps=4", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
            "train.save_steps=2", "eval.at_end=false", "logger=none", "method=abc_adaptive", "method.eta=20",
            "method.target_q1=0.0", "method.target_q2=0.5", "method.target_q3=0.0", "method.target_q4=0.5"]


def eps_rows(record: RunRecord) -> dict[int, list[float]]:
    return {r["step"]: [r[f"eps/eps{i}"] for i in range(1, 5)] for r in record.metrics() if "eps/eps1" in r}


@pytest.mark.slow
def test_a_resumed_abc_adaptive_run_continues_the_controller_exactly(tmp_path, tiny_model_path, monkeypatch):
    from abcx.training.trainer import AbcxGRPOTrainer

    whole = train(compose(ADAPTIVE + [f"results_dir={tmp_path / 'whole'}"]), quiet=True)
    expected = eps_rows(whole)
    assert sorted(expected) == [1, 2, 3, 4]
    assert expected[1] == [0.2] * 4 and expected[3] != expected[1]  # the controller moved the bounds

    original = AbcxGRPOTrainer._controller_step

    def stop_after_step_3(self):
        original(self)
        if self.state.global_step >= 3:
            raise RuntimeError("simulated crash after step 3 (checkpoint-2 on disk)")

    monkeypatch.setattr(AbcxGRPOTrainer, "_controller_step", stop_after_step_3)
    cfg = compose(ADAPTIVE + [f"results_dir={tmp_path / 'resumed'}"])
    with pytest.raises(Exception, match="simulated crash"):
        train(cfg, quiet=True)
    monkeypatch.setattr(AbcxGRPOTrainer, "_controller_step", original)
    record = train(cfg, quiet=True)  # resumes from checkpoint-2
    assert record.status()["state"] == "finished" and record.meta()["attempts"] == 2
    assert eps_rows(record) == expected
