"""`make gpu-check`: on one CUDA GPU, in under 8 minutes, what the CPU tests cannot check.

Checks (each in a process of its own, so one that crashes or holds GPU memory does not spoil the next):
- train_bf16     the testbed trained in bf16 on CUDA with grpo and abc_grpo, 30 steps each: the runs
                 finish and every logged loss is finite;
- heads_agree    abcx's chunked LM head and TRL's fused (Triton) head give the same log-probs and
                 gradients to bf16 tolerance on CUDA, at the testbed's vocabulary and at V = 151,936;
- vllm_colocate  GRPO with vLLM colocate generation of the testbed model: at the first mini-batch of
                 every rollout the importance ratio trainer/vLLM is 1 within bf16 tolerance, so the
                 weights really were synced to vLLM (a TRL bug once left colocate rollouts silently
                 off-policy); the policy's drift over the run says whether stale weights would show;
- head_roofline  bench/bench_head_roofline.py at V = 151,936 (bf16), against the device's roofline;
- eval_vllm      the testbed tokenizer loads in vLLM and encodes as the HF one does, and `abcx eval`
                 through the vLLM backend scores the testbed (the HF backend alongside, for comparison).

A check whose package is missing (vLLM cannot travel to the offline GPU machines) reports "not run:
vLLM not installed" and the others run. Writes OUT/README.md (the device, the package versions and those
that differ from the CPU pins, each check's outcome and figures) and OUT/results.json; exits 0 when no
check failed, 1 when one failed, 2 when it cannot run here (no CUDA device) -- then it writes nothing, so
a placeholder README is never replaced by figures that were not measured.

    python bench/gpu_check.py [--out results/gpu] [--only train_bf16,eval_vllm] [--wheels DIR] [--dry-run]

--wheels DIR installs the offline bundle of `make gpu-wheels` (bench/gpu_bundle.py) into --site with pip
--no-index --no-deps --target, then runs the check with it and abcx's checkout on the path.
--dry-run prints the plan (checks, commands, which run here, time budgets) and runs or installs
nothing; it works without a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 480  # the "under 8 minutes on one GPU"
# torch.testing's defaults for bfloat16; IS ratios and log-prob differences use the same relative bound.
BF16_RTOL, BF16_ATOL = 1.6e-2, 1e-5
TRAIN_STEPS = 30
TESTBED = ["model=tiny", "task=chain", "train=testbed", "logger=none", "eval.at_end=false", "train.bf16=true"]
VLLM_TRAIN = [*TESTBED, "method=grpo", "train.use_vllm=true", "train.vllm_mode=colocate",
              "train.vllm_gpu_memory_utilization=0.25", "train.max_steps=12", "train.save_steps=1000",
              # A faster-moving policy than the testbed's 1e-4, so that weights left stale in vLLM would show.
              "train.learning_rate=5e-4"]
EVAL = ["eval.benchmarks=[chain]", "eval.max_problems=100", "eval.n=8"]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    budget_s: int
    commands: Callable[[Path], list[list[str]]]  # what it runs (for --dry-run and the README)
    run: Callable[[Path], dict]  # -> {"ok": bool, "measured": {...}, "note": str}
    needs: tuple[str, ...] = ()  # optional packages (import names) without which it reports "not run"

    def missing(self) -> list[str]:
        import importlib.util

        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def not_run_note(self) -> str | None:
        missing = self.missing()
        return f"not run: {', '.join(PRETTY.get(m, m) for m in missing)} not installed" if missing else None


PRETTY = {"vllm": "vLLM"}


def abcx(*args: str) -> list[str]:
    return [sys.executable, "-m", "abcx.cli", *args]


def run_cmd(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
           "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{shlex.join(cmd[2:5])}... exited {proc.returncode}: {tail[0][:300]}")
    return proc


def the_record(results_dir: Path):
    from abcx.record import RunRecord

    (run,) = [p for p in (results_dir / "runs").iterdir() if p.is_dir()]
    return RunRecord(run)


# ------------------------------------------------------------------------------------------ checks
def train_commands(work: Path) -> list[list[str]]:
    return [abcx("train", *TESTBED, f"method={m}", f"train.max_steps={TRAIN_STEPS}", "train.save_steps=1000",
                 f"results_dir={work / ('train-' + m)}") for m in ("grpo", "abc_grpo")]


def check_train_bf16(work: Path) -> dict:
    from abcx.record import read_jsonl

    measured, ok = {}, True
    for cmd, method in zip(train_commands(work), ("grpo", "abc_grpo")):
        t0 = time.perf_counter()
        run_cmd(cmd, timeout=150)
        record = the_record(work / f"train-{method}")
        rows = [r for r in read_jsonl(record.metrics_path) if "loss" in r]
        losses = [r["loss"] for r in rows]
        finite = all(math.isfinite(x) for x in losses)
        bf16 = bool(record.meta().get("trl_args", {}).get("bf16"))
        ok &= record.state() == "finished" and len(rows) == TRAIN_STEPS and finite and bf16
        measured[method] = {"state": record.state(), "steps": len(rows), "finite_losses": finite, "bf16": bf16,
                            "loss_last": losses[-1] if losses else None,
                            "reward_first5": _mean(r.get("reward") for r in rows[:5]),
                            "reward_last5": _mean(r.get("reward") for r in rows[-5:]),
                            "seconds": round(time.perf_counter() - t0, 1)}
    return {"ok": ok, "measured": measured, "note": "bf16 mixed precision (TRL bf16=True), testbed config"}


def _mean(values) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def check_heads_agree(work: Path) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from bench_head_roofline import run_path  # the same calls the roofline bench times

    measured, ok = {}, True
    for label, (n, h, v) in {"testbed V=52": (4096, 128, 52), "Qwen3 V=151,936": (2048, 2048, 151936)}.items():
        g = torch.Generator().manual_seed(0)
        hidden = (torch.randn(n, h, generator=g) * 0.5).cuda().bfloat16().requires_grad_()
        weight = (torch.randn(v, h, generator=g) * h ** -0.5).cuda().bfloat16().requires_grad_()
        targets = torch.randint(0, v, (n,), generator=g).cuda()
        grad_out = torch.randn(n, generator=g).cuda()
        out = {}
        for path in ("fused", "chunked"):
            logps = _logps(path, hidden, weight, targets)
            grads = run_path(path, hidden, weight, targets, grad_out)
            out[path] = (logps.float(), [x.float() for x in grads])
        (lf, gf), (lc, gc) = out["fused"], out["chunked"]
        close = torch.allclose(lc, lf, rtol=BF16_RTOL, atol=BF16_ATOL)
        grad_err = [((a - b).norm() / b.norm().clamp(min=1e-12)).item() for a, b in zip(gc, gf)]
        ok &= close and max(grad_err) <= BF16_RTOL
        measured[label] = {"logp_max_abs_diff": (lc - lf).abs().max().item(), "logp_allclose_bf16": close,
                           "grad_rel_err_hidden": grad_err[0], "grad_rel_err_weight": grad_err[1]}
    return {"ok": ok, "measured": measured,
            "note": f"bf16 inputs on CUDA; log-probs allclose(rtol={BF16_RTOL}, atol={BF16_ATOL}), "
                    f"gradients' relative error <= {BF16_RTOL}"}


def _logps(path: str, hidden, weight, targets):
    import torch

    from abcx.training import logprobs

    with torch.no_grad():
        if path == "fused":
            from trl.kernels import ChunkedLogProbFunction

            return ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 32768, None, 1.0,
                                                ("log_probs", "entropy"))[0]
        return logprobs.ChunkedLogProbs.apply(hidden, weight, None, targets, 1.0)[0]


def check_vllm_colocate(work: Path) -> dict:
    from abcx.record import read_jsonl

    run_cmd(abcx("train", *VLLM_TRAIN, f"results_dir={work / 'vllm'}"), timeout=240)
    record = the_record(work / "vllm")
    rollouts = [r for r in read_jsonl(record.metrics_path) if "sampling/sampling_logp_difference/mean" in r]
    rows = [{"step": r["step"], "logp_diff_mean": r["sampling/sampling_logp_difference/mean"],
             "logp_diff_max": r.get("sampling/sampling_logp_difference/max"),
             "is_ratio_mean": r.get("sampling/importance_sampling_ratio/mean"),
             "is_ratio_min": r.get("sampling/importance_sampling_ratio/min"),
             "is_ratio_max": r.get("sampling/importance_sampling_ratio/max")} for r in rollouts]
    synced = len(rows) >= 3 and all(r["logp_diff_mean"] <= BF16_RTOL and r["is_ratio_mean"] is not None
                                    and abs(r["is_ratio_mean"] - 1) <= BF16_RTOL for r in rows)
    drift = policy_drift(record)
    conclusive = drift > 2 * BF16_RTOL
    note = ("the policy moved enough between rollouts that weights left stale in vLLM would show"
            if conclusive else "INCONCLUSIVE: the policy moved too little for stale weights to show")
    return {"ok": record.state() == "finished" and synced and conclusive,
            "measured": {"rollouts": rows, "policy_drift_mean_abs_logp": drift, "state": record.state()},
            "note": f"first mini-batch of each rollout (steps_per_generation 4); {note}"}


def policy_drift(record) -> float:
    """Mean |log p_final - log p_start| over random token sequences: how far training moved the policy."""
    import torch
    from transformers import AutoModelForCausalLM

    from abcx.testbed import ensure_tiny_model

    models = [AutoModelForCausalLM.from_pretrained(str(p)).cuda().eval() for p in (ensure_tiny_model(),
                                                                                 record.path / "final")]
    ids = torch.randint(4, models[0].config.vocab_size, (16, 64), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        lps = [m(ids).logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None]) for m in models]
    return (lps[1] - lps[0]).abs().mean().item()


def eval_commands(work: Path) -> list[list[str]]:
    return [abcx("eval", "tiny", "--backend", b, *EVAL, f"results_dir={work / ('eval-' + b)}") for b in ("vllm", "hf")]


def check_eval_vllm(work: Path) -> dict:
    from abcx.record import read_jsonl
    from abcx.testbed import ensure_tiny_model

    tokenizer_ok, texts = tokenizer_roundtrip(str(ensure_tiny_model()))
    scores = {}
    for cmd, backend in zip(eval_commands(work), ("vllm", "hf")):
        t0 = time.perf_counter()
        run_cmd(cmd, timeout=200)
        (row,) = [r for r in read_jsonl(work / f"eval-{backend}" / "evals" / "tiny" / "eval.jsonl")
                  if r.get("benchmark") == "chain"][-1:]
        scores[backend] = {"metrics": row["metrics"], "ci": row.get("ci"), "n": row.get("n"),
                           "seconds": round(time.perf_counter() - t0, 1)}
    avg = scores["vllm"]["metrics"].get("avg@1")
    ok = tokenizer_ok and isinstance(avg, (int, float)) and 0 <= avg <= 1
    return {"ok": ok, "measured": {"tokenizer_roundtrip": tokenizer_ok, "texts": texts, **scores},
            "note": "vLLM and HF samples differ (different kernels and RNG); compare their CIs, not exact values"}


def tokenizer_roundtrip(path: str) -> tuple[bool, int]:
    from transformers import AutoTokenizer

    try:
        from vllm.tokenizers import get_tokenizer  # newer vLLM
    except ImportError:
        from vllm.transformers_utils.tokenizer import get_tokenizer
    texts = ["5+95+7+6=", "5+95=100,100+7=107,107+6=113", "12+3+40+8+1="]
    hf, vl = AutoTokenizer.from_pretrained(path), get_tokenizer(path)
    return all(vl.encode(t) == hf.encode(t) and vl.decode(vl.encode(t), skip_special_tokens=True) == t
               for t in texts), len(texts)


def check_head_roofline(work: Path) -> dict:
    proc = run_cmd([sys.executable, str(REPO / "bench" / "bench_head_roofline.py"), "--vocab", "151936"], timeout=150)
    lines = proc.stdout.splitlines()
    result = json.loads(next(ln for ln in lines if ln.startswith("RESULT "))[len("RESULT "):])
    table = [ln for ln in lines if ln.startswith("|") or "TFLOP" in ln and not ln.startswith("RESULT")]
    return {"ok": True, "measured": {"result": result, "table": table},
            "note": "ran; whether the roofline goal is met is the bench's own `met` field"}


CHECKS = {c.name: c for c in [
    Check("train_bf16", f"testbed trained in bf16 on CUDA, grpo and abc_grpo, {TRAIN_STEPS} steps each", 150,
          train_commands, check_train_bf16),
    Check("heads_agree", "abcx chunked head vs TRL fused head, bf16 tolerance", 60,
          lambda w: [["(in process) bench_head_roofline.run_path: fused vs chunked"]], check_heads_agree),
    Check("vllm_colocate", "vLLM colocate: importance ratio 1 at each rollout's first mini-batch", 180,
          lambda w: [abcx("train", *VLLM_TRAIN, f"results_dir={w / 'vllm'}")], check_vllm_colocate, ("vllm",)),
    Check("head_roofline", "LM-head roofline bench at V = 151,936", 90,
          lambda w: [[sys.executable, "bench/bench_head_roofline.py", "--vocab", "151936"]], check_head_roofline),
    Check("eval_vllm", "testbed tokenizer in vLLM, `abcx eval` through the vLLM backend", 150,
          eval_commands, check_eval_vllm, ("vllm",)),
]}


# ------------------------------------------------------------------------------------------ driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/gpu_check.py", description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--out", default=str(REPO / "results" / "gpu"), help="where README.md and results.json go")
    ap.add_argument("--only", default=None, help=f"comma-separated checks; valid: {', '.join(CHECKS)}")
    ap.add_argument("--work", default=None, help="scratch folder for the runs (default: a temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing (works without a GPU)")
    ap.add_argument("--wheels", default=None, help="install this offline bundle (make gpu-wheels) first")
    ap.add_argument("--site", default=str(REPO / ".gpu-site"), help="where --wheels installs (default .gpu-site)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one check, print its JSON
    opts = ap.parse_args(argv)
    names = [n.strip() for n in opts.only.split(",") if n.strip()] if opts.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown or not names:
        ap.exit(2, f"--only={opts.only}: unknown check {unknown[0] if unknown else '(none given)'!r}; "
                   f"valid: {', '.join(CHECKS)}\n")
    opts.names = names
    return opts


def plan_lines(names: list[str], work: Path) -> list[str]:
    skipped = {n: CHECKS[n].not_run_note() for n in names if CHECKS[n].not_run_note()}
    lines = [f"gpu-check plan: {len(names)} check(s), {len(names) - len(skipped)} run here, {len(skipped)} not "
             f"run; at most {TOTAL_BUDGET_S} s in all"]
    for name in names:
        check = CHECKS[name]
        lines.append(f"- {name} (budget {check.budget_s} s) [{skipped.get(name, 'runs')}]: {check.title}")
        lines += [f"    {shlex.join(cmd)}" for cmd in check.commands(work)]
    return lines


def install_bundle(opts: argparse.Namespace, argv: list[str]) -> int:
    """--wheels: install the offline bundle, then run this script again with it on the path."""
    import gpu_bundle

    wheels, site = Path(opts.wheels).resolve(), Path(opts.site).resolve()
    rest = [a for i, a in enumerate(argv) if not (a == "--wheels" or a.startswith("--wheels=")
                                                   or (i and argv[i - 1] == "--wheels"))]
    if opts.dry_run:
        manifest = gpu_bundle.read_manifest(wheels)
        print(f"would install {len(manifest['wheels'])} wheels of {wheels} (Python {manifest['python_version']}) "
              f"with: {sys.executable} -m pip install --no-index --no-deps --target {site / 'lib'}, then:")
        return main(rest)
    env = gpu_bundle.install(wheels, site / "lib", Path(os.environ.get("ABCX_CACHE") or site / "abcx-cache"))
    env["ABCX_GPU_BUNDLE"] = str(wheels)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, __file__, *rest], {**os.environ, **env})


def describe_device() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "devices_visible": torch.cuda.device_count(), "cuda_runtime": torch.version.cuda,
            "host": platform.node(), "python": platform.python_version()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
        info["driver"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["driver"] = None
    info["packages"] = {p: _version(p) for p in PACKAGES}
    info["differ_from_cpu_pins"] = {p: {"here": _version(p), "cpu_pin": pin} for p, pin in cpu_pins().items()
                                    if (_version(p) or "").split("+")[0] != pin}
    info["bundle"] = bundle_used()
    info["testbed"] = testbed_used()
    return info


PACKAGES = ("torch", "transformers", "accelerate", "trl", "datasets", "hydra-core", "omegaconf", "submitit", "vllm")


def cpu_pins() -> dict[str, str]:
    """constraints-cpu.txt's name==version pins: what the CPU tests and committed results ran with."""
    pins = {}
    for line in (REPO / "constraints-cpu.txt").read_text().splitlines():
        name, sep, pin = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip()] = pin.strip()
    return pins


def bundle_used() -> dict | None:
    """The offline bundle this run was installed from (--wheels), and what its wheels want that is not here."""
    if not os.environ.get("ABCX_GPU_BUNDLE"):
        return None
    import gpu_bundle

    manifest = gpu_bundle.read_manifest(Path(os.environ["ABCX_GPU_BUNDLE"]))
    wheels = [" ".join(w["file"].split("-")[:2]) for w in manifest["wheels"]]  # name-version-tags.whl
    return {"wheels": wheels, "unmet": gpu_bundle.unmet_requirements()}


def testbed_used() -> dict | None:
    from abcx.testbed import DEFAULT_RECIPE, MARKER, cache_root

    marker = cache_root() / "testbed" / DEFAULT_RECIPE.folder_name() / MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    return {"folder": info.get("name"), "built_with": info.get("versions"), "host": info.get("built", {}).get("host")}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_one(name: str, work: Path, timeout: float) -> dict:
    """One check in a fresh process: it starts with the whole GPU and cannot take the others down."""
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--one", name, "--work", str(work)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("CHECK ")), None)
        if line is None:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            result = {"ok": False, "measured": {}, "note": f"crashed (exit {proc.returncode}): {tail[:400]}"}
        else:
            result = json.loads(line[len("CHECK "):])
    except subprocess.TimeoutExpired:
        result = {"ok": False, "measured": {}, "note": f"over its {timeout:.0f} s budget"}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def one(name: str, work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = CHECKS[name].run(work)
    except Exception as err:  # noqa: BLE001 - a failed check is a result, reported in the README
        result = {"ok": False, "measured": {}, "note": f"{type(err).__name__}: {err}".splitlines()[0][:400]}
    print("CHECK " + json.dumps(result, default=str), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    if opts.wheels:
        return install_bundle(opts, argv)
    if opts.one:
        return one(opts.one, Path(opts.work))
    if opts.dry_run:
        print("\n".join(plan_lines(opts.names, Path(opts.work or "<scratch>"))))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False here; nothing was run or written "
              "(see --dry-run for the plan)", file=sys.stderr)
        return 2
    work = Path(opts.work) if opts.work else Path(tempfile.mkdtemp(prefix="abcx-gpu-check-"))
    device, results, t0 = describe_device(), {}, time.perf_counter()
    print(f"gpu-check on {device['name']} ({device['memory_gib']} GiB); scratch {work}", flush=True)
    for name in opts.names:
        left = TOTAL_BUDGET_S - (time.perf_counter() - t0)
        if CHECKS[name].not_run_note():
            results[name] = {"ok": None, "measured": {}, "note": CHECKS[name].not_run_note(), "seconds": 0}
            print(f"  {name}: {results[name]['note']}", flush=True)
            continue
        if left < 10:
            results[name] = {"ok": False, "measured": {}, "note": "not run: the 8-minute budget was spent", "seconds": 0}
            continue
        results[name] = run_one(name, work, min(CHECKS[name].budget_s, left))
        print(f"  {name}: {'pass' if results[name]['ok'] else 'FAIL'} in {results[name]['seconds']} s -- "
              f"{results[name]['note']}", flush=True)
    total = round(time.perf_counter() - t0, 1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "checks": results, "total_seconds": total, "budget_seconds": TOTAL_BUDGET_S,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "README.md").write_text(render_readme(report))
    counts = {o: sum(1 for r in results.values() if r["ok"] is o) for o in (True, False, None)}
    print(f"gpu-check: {counts[True]} passed, {counts[False]} failed, {counts[None]} not run, in {total} s; "
          f"wrote {out}")
    return 1 if counts[False] else 0


def render_readme(report: dict) -> str:
    d = report["device"]
    lines = ["# GPU check (`make gpu-check`)", "",
             f"Run {report['date']} by bench/gpu_check.py in {report['total_seconds']} s "
             f"(budget {report['budget_seconds']} s).", "",
             f"Device: {d['name']}, {d['memory_gib']} GiB, compute capability {d['compute_capability']}, "
             f"{d['multiprocessors']} SMs; {d['devices_visible']} device(s) visible, one used; CUDA runtime "
             f"{d['cuda_runtime']}, driver {d['driver']}; host {d['host']}, Python {d['python']}.", "",
             *software_lines(d), "",
             "| check | result | seconds | note |", "|---|---|---:|---|"]
    for name, r in report["checks"].items():
        result = {True: "pass", False: "**FAIL**", None: "not run"}[r["ok"]]
        lines.append(f"| {name} | {result} | {r['seconds']} | {r['note']} |")
    for name, r in report["checks"].items():
        if r["ok"] is None:
            continue
        lines += ["", f"## {name}", "", CHECKS[name].title if name in CHECKS else name, ""]
        table = r["measured"].get("table") if isinstance(r["measured"], dict) else None
        lines += table or ["```json", json.dumps(r["measured"], indent=1, default=str), "```"]
    lines += ["", "Rerun: `make gpu-check` (or `python bench/gpu_check.py --only NAME`); figures are in results.json.", ""]
    return "\n".join(lines)


def software_lines(d: dict) -> list[str]:
    """The versions the check ran with, those that differ from what the CPU tests pin, and where they came from."""
    lines = ["Software: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in d["packages"].items()) + "."]
    differ = d.get("differ_from_cpu_pins") or {}
    if differ:
        lines.append("Different from the CPU pins (constraints-cpu.txt): " + ", ".join(
            f"{k} {v['here'] or 'not installed'} (CPU {v['cpu_pin']})" for k, v in differ.items()) + ".")
    bundle = d.get("bundle")
    if bundle:
        unmet = "; ".join(bundle["unmet"]) if bundle["unmet"] else "none"
        lines.append(f"Installed offline from the `make gpu-wheels` bundle ({', '.join(bundle['wheels'])}) with pip "
                     f"--no-index --no-deps; requirements they declare that this machine does not meet: {unmet}.")
    testbed = d.get("testbed")
    if testbed:
        lines.append(f"Testbed model {testbed['folder']}, built on {testbed['host']} with {testbed['built_with']}.")
    return [" ".join(lines)] if len(lines) == 1 else [line + "  " for line in lines[:-1]] + lines[-1:]


if __name__ == "__main__":
    sys.exit(main())
