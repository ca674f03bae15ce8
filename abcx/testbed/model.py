"""The tiny policy: a real `Qwen3ForCausalLM`, only small, so every code path a large Qwen3 takes in
TRL (generation, log-probs, saving, reloading as a reference model) is exercised on a CPU."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    # The longest chain (8 operands of 2 digits, the chain_hard benchmark) is ~25 prompt + ~80
    # completion characters: 128 positions hold it.
    max_position_embeddings: int = 128

    def as_dict(self) -> dict:
        return asdict(self)


def qwen3_config(tokenizer, shape: ModelShape):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        rms_norm_eps=1e-6,
        rope_theta=10_000.0,
        attention_dropout=0.0,
        use_cache=True,
        dtype="float32",
        **shape.as_dict(),
    )


def init_model(tokenizer, shape: ModelShape, seed: int):
    """A freshly initialised model; the same seed gives bit-identical weights."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(qwen3_config(tokenizer, shape))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return model
