"""Warm start: a short supervised fine-tune on chain-sum traces so the tiny policy is partly competent.

GRPO learns nothing from a policy that is never right (every group has zero reward variance) or
always right; a brief SFT, stopped early on purpose, leaves it in between. The stop is early in a
planned schedule: the cosine is laid out over `planned_steps` but training stops at `steps`, so the
learning rate is still high when it stops and the policy is competent but far from saturated (run
to the end of its schedule it saturates, leaving RL nothing to show). Demonstrations come from the
task's `sft` pool, disjoint from the problems RL trains on and from the eval pool. Plain torch loop:
fewer moving parts than HF Trainer and bit-reproducible on one machine.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WarmStart:
    # Task shape. The demonstrations span 4-8 operands: RL trains on 4-5 (conf/task/chain.yaml) and
    # the chain_hard benchmark asks for 6-8, so a warm start on 4-5 alone could not do 6-8 at all
    # (measured: 1.5% right at 6 operands, 0.1% at 6-8: it stops after the 4 steps it knows) and
    # the hard split would measure nothing. This way it asks whether RL on short chains carries over
    # to the longer chains the policy can already write.
    min_operands: int = 4
    max_operands: int = 8
    digits: int = 2
    ops: str = "+"
    write_steps: bool = True
    task_seed: int = 0
    # 380 steps x 64 = 24,320 of the 32,000 demonstrations, each seen once, stopped a fifth into the
    # planned cosine (see the module docstring). Measured (results/testbed/validity.md, entropy.md):
    # stopped at 500 the policy is sharper on 4-5 operands (held-out Avg@16 0.45, Pass@16 0.93, a third
    # less token entropy) with less room for RL to show Pass@k moving, and the build takes a third longer;
    # stopped at 300 it is right too rarely (Avg@16 0.10) for a group of 8 to carry a signal.
    n_sft: int = 32_000
    steps: int = 380
    planned_steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    # New tokens when the warm start is sampled (tests, bench): an 8-operand chain is about 80.
    max_new_tokens: int = 96

    def task_shape(self) -> dict:
        return dict(min_operands=self.min_operands, max_operands=self.max_operands, digits=self.digits, ops=self.ops)

    def as_dict(self) -> dict:
        return asdict(self)


def encode_examples(tokenizer, rows: list[tuple[str, str]]):
    """(input_ids, labels, attention_mask), right-padded; loss only on the answer and the <eos>."""
    import torch

    seqs, labels = [], []
    for prompt, answer in rows:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        mask[i, : len(s)] = 1
    return ids, lab, mask


def sft(model, tokenizer, rows: list[tuple[str, str]], recipe: WarmStart, log=None, on_step=None) -> dict[str, Any]:
    """Train `model` in place; returns {"loss": last loss, "seconds": wall time}. `on_step(steps done,
    loss)` after each step (progress; it must not touch the model)."""
    import torch

    ids, lab, mask = encode_examples(tokenizer, rows)
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                            betas=(0.9, 0.98))

    horizon = max(recipe.planned_steps, recipe.steps)

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        progress = (step - recipe.warmup) / max(1, horizon - recipe.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    start, loss_value, order, cursor = time.perf_counter(), float("nan"), torch.randperm(len(rows), generator=gen), 0
    for step in range(recipe.steps):
        if cursor + recipe.batch_size > len(rows):
            order, cursor = torch.randperm(len(rows), generator=gen), 0
        idx = order[cursor : cursor + recipe.batch_size]
        cursor += recipe.batch_size
        # Trim the batch to its longest row: most rows are shorter than the widest in the set.
        width = int(mask[idx].sum(1).max())
        out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=lab[idx, :width])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(out.loss.detach())
        if on_step is not None:
            on_step(step + 1, loss_value)
        if log is not None and (step % 100 == 0 or step == recipe.steps - 1):
            log(f"sft step {step}/{recipe.steps} loss {loss_value:.4f}")
    model.eval()
    return {"loss": loss_value, "seconds": time.perf_counter() - start}


def completions(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 8, do_sample: bool = False,
                num_return_sequences: int = 1, seed: int = 0, batch_size: int = 256) -> list[str]:
    """Decoded completions (special tokens dropped), `num_return_sequences` per prompt, in order."""
    import torch

    # Batched generation needs left padding; the testbed tokenizer is saved with padding_side="left".
    out: list[str] = []
    torch.manual_seed(seed)
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if do_sample else dict(do_sample=False)
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **sampling)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def accuracy(model, tokenizer, rows: list[tuple[str, str]], is_correct, *, do_sample: bool = False,
             samples: int = 1, max_new_tokens: int = 8, seed: int = 0) -> float:
    """Fraction of correct completions over `rows` (× `samples` per problem when sampling)."""
    texts = completions(model, tokenizer, [p for p, _ in rows], max_new_tokens=max_new_tokens,
                        do_sample=do_sample, num_return_sequences=samples, seed=seed)
    answers = [a for _, a in rows for _ in range(samples)]
    return sum(is_correct(t, a) for t, a in zip(texts, answers)) / max(1, len(texts))


def sampled_accuracy(model, tokenizer, rows: list[tuple[str, str]], k: int, is_correct, *, max_new_tokens: int = 8,
                     seed: int = 0, batch_size: int = 64) -> tuple[float, float]:
    """(Avg@k, Pass@k) from one draw of k samples per problem at temperature 1 (Pass@k: at least one right)."""
    texts = completions(model, tokenizer, [p for p, _ in rows], max_new_tokens=max_new_tokens, do_sample=True,
                        num_return_sequences=k, seed=seed, batch_size=batch_size)
    right = [[is_correct(t, a) for t in texts[i * k:(i + 1) * k]] for i, (_, a) in enumerate(rows)]
    n = max(1, len(rows))
    return sum(sum(r) for r in right) / (n * k), sum(any(r) for r in right) / n
