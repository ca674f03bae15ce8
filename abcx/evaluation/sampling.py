"""Draw n completions per prompt with fixed sampling settings: vLLM when it is installed and a GPU is
present, transformers `generate` otherwise. Both use the same temperature / top_p / top_k / max length,
so numbers from either backend are comparable."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence


from abcx.config.schema import EvalConf

_DEFAULTS = EvalConf()  # the eval group's schema declares the sampling defaults; this reuses them


@dataclass(frozen=True)
class Sampling:
    n: int = _DEFAULTS.n
    temperature: float = _DEFAULTS.temperature
    top_p: float = _DEFAULTS.top_p
    top_k: int = _DEFAULTS.top_k
    max_new_tokens: int = _DEFAULTS.max_new_tokens
    seed: int = _DEFAULTS.seed

    @classmethod
    def from_config(cls, eval_cfg: Any) -> "Sampling":
        return cls(n=int(eval_cfg.n), temperature=float(eval_cfg.temperature), top_p=float(eval_cfg.top_p),
                   top_k=int(eval_cfg.top_k), max_new_tokens=int(eval_cfg.max_new_tokens), seed=int(eval_cfg.seed))

    def as_dict(self) -> dict:
        return asdict(self)


def render_prompts(tokenizer, prompts: Sequence[Any]) -> list[str]:
    """Chat-message prompts go through the model's chat template; plain strings are used as they are."""
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True))
    return out


def backend_available() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            import vllm  # noqa: F401

            return "vllm"
    except ImportError:
        pass
    return "hf"


def sample_hf(model, tokenizer, prompts: Sequence[str], sampling: Sampling, batch_size: int = 64,
              on_batch=None) -> list[list[str]]:
    """n samples per prompt with `generate`; `batch_size` bounds the rows generated at once.
    `on_batch(prompts done)` after each batch (progress)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator_seed = sampling.seed
    prompts_per_batch = max(1, batch_size // sampling.n)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation needs the prompts right-aligned
    outputs: list[list[str]] = []
    try:
        for start in range(0, len(prompts), prompts_per_batch):
            chunk = list(prompts[start:start + prompts_per_batch])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(generator_seed + start)
            with torch.no_grad():
                out = model.generate(
                    **enc, do_sample=sampling.temperature > 0, temperature=sampling.temperature or None,
                    top_p=sampling.top_p, top_k=sampling.top_k or None, max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=sampling.n, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            outputs += [texts[i * sampling.n:(i + 1) * sampling.n] for i in range(len(chunk))]
            if on_batch is not None:
                on_batch(len(outputs))
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return outputs


def sample_vllm(model_path: str, prompts: Sequence[str], sampling: Sampling) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=sampling.seed)
    params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                            top_k=sampling.top_k if sampling.top_k > 0 else -1, max_tokens=sampling.max_new_tokens,
                            seed=sampling.seed)
    results = llm.generate(list(prompts), params)
    return [[o.text for o in r.outputs] for r in results]
