"""The embedded default testbed: a tiny Qwen3 with a character tokenizer, warm-started on `chain`.

Built locally and deterministically (nothing is downloaded), cached under `$ABCX_CACHE` or
`~/.cache/abcx/` in a folder named by a hash of the recipe, so changing the recipe rebuilds and
every run that uses the same recipe shares one build. Importing this package does not import torch.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from abcx.testbed.model import ModelShape
from abcx.testbed.warmstart import WarmStart

log = logging.getLogger("abcx.testbed")

# Bump when the build code changes in a way the recipe fields do not capture.
BUILD_VERSION = 4
MARKER = "testbed.json"


@dataclass(frozen=True)
class Recipe:
    shape: ModelShape = field(default_factory=ModelShape)
    warm: WarmStart = field(default_factory=WarmStart)
    init_seed: int = 0

    def as_dict(self) -> dict:
        from abcx.testbed.tokenizer import CHARACTERS, CHAT_TEMPLATE, SPECIAL_TOKENS

        return {
            "build_version": BUILD_VERSION,
            "shape": self.shape.as_dict(),
            "warm": self.warm.as_dict(),
            "init_seed": self.init_seed,
            # The tokenizer is part of the recipe: a vocabulary change must not reuse old weights.
            "tokenizer": {"special": list(SPECIAL_TOKENS), "characters": CHARACTERS, "chat_template": CHAT_TEMPLATE},
        }

    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def folder_name(self) -> str:
        return f"tiny-qwen3-{self.digest()}"


DEFAULT_RECIPE = Recipe()


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ABCX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "abcx"


def ensure_tiny_model(cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Folder holding the default tiny model and its tokenizer (loadable with the Auto classes).

    Builds it on first use (about 3 minutes on one CPU core); later calls return at once. Safe when
    several processes call it together: one builds, the others wait for it and reuse its result.
    """
    return ensure_testbed(DEFAULT_RECIPE, cache_dir=cache_dir, force=force)


def ensure_testbed(recipe: Recipe, cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """As `ensure_tiny_model`, for any recipe (tests use a quick one)."""
    parent = cache_root(cache_dir) / "testbed"
    final = parent / recipe.folder_name()
    if not force and (final / MARKER).is_file():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f"{final.name}.lock", "a+") as lock:
        # The lock serialises builders; a process that dies releases it with its file descriptors.
        _wait_for_builder(lock)
        try:
            if not force and (final / MARKER).is_file():
                return final
            # Only the lock holder builds, so any temp folder left here is from a killed build.
            for stale in parent.glob(f"{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=parent))
            try:
                log.info("building tiny model %s into %s", final.name, final)
                build_testbed(tmp, recipe, progress=True)
                if final.exists():  # force=True, or a folder without its marker
                    old = parent / f"{final.name}.tmp-old-{os.getpid()}"
                    os.rename(final, old)
                    shutil.rmtree(old, ignore_errors=True)
                # rename is atomic: readers see no folder or a complete one, never a half-written one.
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wait_for_builder(lock) -> None:
    """Take the build lock; while another process holds it (it is building), say so as it goes."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    from abcx import progress

    with progress.task("waiting for another process to build the testbed model", name="testbed model"):
        fcntl.flock(lock, fcntl.LOCK_EX)


def build_testbed(folder: str | Path, recipe: Recipe = DEFAULT_RECIPE, progress: bool = False) -> dict:
    """Build tokenizer + warm-started model into `folder` (no locking, no caching); returns testbed.json.
    `progress`: show the build as it goes (said at once: the imports alone take seconds)."""
    if not progress:
        return _build_quietly(Path(folder), recipe, None)
    from abcx import progress as shown
    from abcx.libraries import quiet_progress_bars

    quiet_progress_bars()  # "Writing model shards": the build's own progress says it
    minutes = "about 2-3 min" if recipe.warm.steps >= 100 else "a few seconds"
    started = time.monotonic()
    with shown.task(f"building the testbed model (first use, {minutes})", name="testbed model",
                    info="importing torch and transformers") as task:
        info = _build_quietly(Path(folder), recipe, task)
        task.done(f"[testbed model] built in {shown.duration(time.monotonic() - started)}")
        return info


def _build_quietly(folder: Path, recipe: Recipe, task) -> dict:
    import torch

    # One thread: bit-identical results whatever the core count, and no OpenMP spin-waiting when
    # sweep jobs share the cores (measured: 2 threads under load ran 15x slower than 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(folder, recipe, task)
    finally:
        torch.set_num_threads(threads)


def _build(folder: Path, recipe: Recipe, task=None) -> dict:
    import torch
    import transformers

    from abcx.tasks.chain import demonstrations
    from abcx.testbed.model import init_model
    from abcx.testbed.tokenizer import save_tokenizer
    from abcx.testbed.warmstart import sft

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    w = recipe.warm
    if task is not None:
        task.update(info=f"writing {w.n_sft:,} demonstrations")
    tok = save_tokenizer(folder)
    model = init_model(tok, recipe.shape, recipe.init_seed)
    train = demonstrations(w.n_sft, seed=w.task_seed, write_steps=w.write_steps, **w.task_shape())
    if task is not None:
        task.update(info=f"tokenizing {w.n_sft:,} demonstrations")

    def step_done(step: int, loss: float) -> None:
        if task is not None:  # the count (and its rate) starts with the first SFT step
            task.update(step, total=w.steps, unit="SFT steps", info=f"loss {loss:.3f}")

    stats = sft(model, tok, train, w, log=log.debug, on_step=step_done)
    # No accuracy is measured here: `abcx eval tiny` measures the warm start with the runs' own
    # evaluation (make demo runs it first), results/testbed/validity.md with CIs, and a measurement
    # here cost every first run 15-50 s of its 5-minute demo.
    if task is not None:
        task.update(info="saving")
    model.save_pretrained(str(folder))
    info = {
        "name": recipe.folder_name(),
        "recipe_hash": recipe.digest(),
        "recipe": recipe.as_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "sft": stats,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "built": {"host": socket.gethostname(), "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "seconds": time.perf_counter() - started, "torch_threads": torch.get_num_threads()},
    }
    # Written last: its presence marks a complete build.
    (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_testbed_info(folder: str | Path) -> dict:
    return json.loads((Path(folder) / MARKER).read_text())


__all__ = ["DEFAULT_RECIPE", "Recipe", "build_testbed", "cache_root", "ensure_testbed", "ensure_tiny_model",
           "read_testbed_info"]
