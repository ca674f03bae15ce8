"""The experiment config: schema (`schema`), composition from conf/ with overrides (`compose`),
validation (`validate`, with every field's domain in `domains` and TRL's own checks through
`trl_args`), identity (`identity`: config hash and run id) and what the train settings mean for
clipping (`rollout`). Import the submodule you need; this package imports nothing.
"""
