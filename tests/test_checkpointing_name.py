"""train.gradient_checkpointing keeps its name in abcx's config, and reaches TRL under the name the
installed transformers takes: transformers 5.2x renamed it activation_checkpointing (the old name warns
on every run and goes in v6); the GPU image's transformers 5.17 knows only the old one."""
import dataclasses

import pytest

from abcx.config.compose import compose
from abcx.config.trl_args import current_names, grpo_args

# What transformers says when given the old names is an error in every test (pyproject's filterwarnings),
# so these fail if abcx passes them where the new names exist.


def grpo_fields() -> set[str]:
    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig)}


@pytest.mark.parametrize("on", [True, False])
def test_the_trl_args_carry_the_setting_under_the_installed_name_without_a_deprecation_warning(on, tmp_path):
    cfg = compose([f"train.gradient_checkpointing={str(on).lower()}",
                   "+train.extra.gradient_checkpointing_kwargs={use_reentrant:false}"])
    args = grpo_args(cfg, tmp_path, report_to=[])
    assert args.gradient_checkpointing is on and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    if "activation_checkpointing" in grpo_fields():
        assert args.activation_checkpointing is on and args.activation_checkpointing_kwargs == {"use_reentrant": False}


def test_the_old_names_stay_for_a_transformers_that_has_only_them_and_a_new_name_given_is_kept():
    kwargs = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"a": 1}, "max_steps": 3}
    old_only = {"gradient_checkpointing", "gradient_checkpointing_kwargs", "max_steps"}
    assert current_names(kwargs, old_only) == kwargs
    both = old_only | {"activation_checkpointing", "activation_checkpointing_kwargs"}
    assert current_names(kwargs, both) == {"activation_checkpointing": True,
                                           "activation_checkpointing_kwargs": {"a": 1}, "max_steps": 3}
    given = {**kwargs, "activation_checkpointing_kwargs": {"b": 2}}
    assert current_names(given, both) == {"activation_checkpointing": True, "gradient_checkpointing_kwargs": {"a": 1},
                                          "max_steps": 3, "activation_checkpointing_kwargs": {"b": 2}}


@pytest.mark.slow
def test_a_run_with_gradient_checkpointing_trains_and_records_it_without_the_deprecation(tmp_path, tiny_model_path):
    from abcx.training.train import train

    record = train(compose(["train.gradient_checkpointing=true", "train.max_steps=2", "train.save_steps=2",
                            "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
                            "eval.at_end=false", "logger=none", f"results_dir={tmp_path}"]), quiet=True)
    assert record.state() == "finished", record.status()
    trl_args = record.meta()["trl_args"]
    assert trl_args["gradient_checkpointing"] is True
    assert trl_args.get("activation_checkpointing", True) is True
