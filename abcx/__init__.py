"""abcx: experiment management and ablations for clipped policy-gradient RL (GRPO vs ABC-GRPO)."""

__version__ = "0.1.0"
