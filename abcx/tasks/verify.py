"""Math answer checking with math-verify, safe against answers that would stall an evaluation.

Extraction: the model's answer is the last balanced `\\boxed{…}` (or `\\fbox{…}`) of the completion;
without one, math-verify's own extraction runs on the completion's tail ("the answer is …", last
expression). Gold answers are wrapped as `$…$` before parsing: math-verify reads an unwrapped
`2\\sqrt{3}` as plain text and keeps only the `2`, which would then match a wrong "2".

Timeouts: math-verify's own timeouts use SIGALRM, which only works in a main thread and silently
cancels the caller's alarm. Here each check gets one deadline of its own (an interval timer whose
exception derives from BaseException, so library `except Exception` blocks cannot swallow it), and
the caller's timer is re-armed afterwards. Checks normally run in a pool of worker processes
(`verify_many`); a worker stuck in C code where no signal gets through is killed after the
deadline plus a grace second and replaced, and its answer counts as wrong.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import signal
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Sequence

from abcx.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
# A worker gets this long beyond its own deadline to answer before it is killed.
_GRACE_S = 1.0
# A new worker must import math-verify and report ready within this time.
_START_LIMIT_S = 120.0
# Without a \boxed answer, only the end of a completion is searched: answers come last, and
# math-verify's regexes over a 16k-token completion cost more than the whole check otherwise does.
_TAIL_CHARS = 2000
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_READY = "ready"

Check = Callable[[str, str], bool]


# ---------------------------------------------------------------- extraction


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at text[start] == "{", and the index after it."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # \{ and \} are literal braces, not grouping
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{…}` / `\\fbox{…}` (or `\\boxed 5`), else None."""
    end = len(text)
    while True:
        pos = max(text.rfind(cmd, 0, end) for cmd in _BOX_COMMANDS)
        if pos < 0:
            return None
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, pos))
        i = pos + len(cmd)
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            group = _braced(text, i)
            if group is not None and group[0].strip():
                return group[0].strip()
        elif i > pos + len(cmd):  # "\boxed 5": the next token
            token = text[i:].split(None, 1)
            if token and token[0].rstrip("$.,"):
                return token[0].rstrip("$.,")
        end = pos  # truncated or empty box: look at the one before


def _prediction_text(completion: str) -> str:
    boxed = last_boxed(completion)
    if boxed is not None:
        return "\\boxed{" + boxed + "}"
    return completion[-_TAIL_CHARS:]


def _gold_text(gold: str) -> str:
    g = gold.strip()
    if "$" in g or "\\boxed" in g or "\\(" in g or "\\[" in g:
        return g
    return f"${g}$"


# ---------------------------------------------------------------- one check


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; here they are replaced, not missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


@functools.lru_cache(maxsize=1)
def _math_verify() -> Any:
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
    return math_verify


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold_text: str) -> Any:
    # Cached: the same gold is checked against every sample of its problem.
    return _math_verify().parse(gold_text, parsing_timeout=None)


def check_answer(completion: str, gold: str) -> bool:
    """The check itself, without any time limit: use `is_equivalent` or `verify_many` instead."""
    mv = _math_verify()
    try:
        gold_parsed = _parse_gold(_gold_text(gold))
        if not gold_parsed:
            log.warning("gold answer %r could not be parsed; every answer to it counts as wrong", gold)
            return False
        pred = mv.parse(_prediction_text(completion), parsing_timeout=None)
        if not pred:
            return False
        return bool(mv.verify(gold_parsed, pred, timeout_seconds=None))
    except Exception:  # a checker bug must cost one answer, not the evaluation
        log.debug("math-verify failed on %r vs %r", completion[-200:], gold, exc_info=True)
        return False


class _Deadline(BaseException):
    pass


def _raise_deadline(signum: int, frame: Any) -> None:
    raise _Deadline()


def _with_deadline(check: Check, completion: str, gold: str, timeout_s: float) -> bool:
    """check(completion, gold), or False once timeout_s has passed. Main thread only."""
    old_handler = signal.signal(signal.SIGALRM, _raise_deadline)
    started = time.monotonic()
    prev_delay, prev_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            return bool(check(completion, gold))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        return False
    finally:
        # None: a handler installed outside Python; the default is the closest restorable one
        signal.signal(signal.SIGALRM, signal.SIG_DFL if old_handler is None else old_handler)
        if prev_delay > 0:  # give the caller back its own timer (e.g. pytest-timeout's)
            left = prev_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), prev_interval)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _check_timeout(timeout_s: float) -> float:
    timeout_s = float(timeout_s)
    if not timeout_s > 0:
        raise UserError(f"verify timeout_s={timeout_s}; need a positive number of seconds")
    return timeout_s


def is_equivalent(completion: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when the completion's answer equals the gold answer mathematically.

    Runs here when called from the main thread, with a deadline; from other threads (where no
    signal can interrupt it) it runs in a one-worker pool.
    """
    timeout_s = _check_timeout(timeout_s)
    if _in_main_thread():
        return _with_deadline(check_answer, str(completion), str(gold), timeout_s)
    return verify_many([(completion, gold)], workers=1, timeout_s=timeout_s)[0]


# ---------------------------------------------------------------- worker pool


# Workers are plain subprocesses running this module, not multiprocessing children: "fork" is
# unsafe once torch/CUDA threads exist, and "spawn"/"forkserver" re-run the caller's __main__ in
# every worker (an unguarded script would start pools recursively).
_WORKER_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from abcx.tasks.verify import _worker_entry; _worker_entry(int(sys.argv[2]), int(sys.argv[3]))"
)


def _worker_entry(read_fd: int, write_fd: int) -> None:
    from multiprocessing.connection import Connection

    # The parent handles Ctrl-C and closes the pool; a worker stops when its pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    try:
        check = inbox.recv()
        _math_verify()  # import before reporting ready, so start-up never eats into a check's deadline
        outbox.send(_READY)
        while True:
            msg = inbox.recv()
            if msg is None:
                return
            index, completion, gold, timeout_s = msg
            outbox.send((index, _with_deadline(check, completion, gold, timeout_s)))
    except (EOFError, OSError):  # the pool closed (possibly before this worker was even ready)
        return


class _Worker:
    def __init__(self, check: Check) -> None:
        import json
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, json.dumps(sys.path), str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.started = time.monotonic()
        self.ready = False
        try:
            self.send_conn.send(check)
        except OSError:  # died at once; the pool sees EOF on self.conn
            pass

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.send_conn.send(None)
            except OSError:
                pass
        self.send_conn.close()
        self.conn.close()
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)


class VerifierPool:
    """Worker processes that run checks with a deadline each; kills and replaces stuck workers.

    `check(completion, gold) -> bool` is the function run per pair (default: `check_answer`); it
    is sent to the workers by reference, so it must be a module-level function they can import
    (they get this process's sys.path). Use as a context manager, or call `close()`.
    """

    def __init__(self, workers: int, check: Check | None = None) -> None:
        workers = int(workers)
        if workers < 1:
            raise UserError(f"verify workers={workers}; a pool needs >= 1 (0 means: check in this process)")
        self._check = check or check_answer
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.restarts = 0
        self.closed = False
        self._workers = [_Worker(self._check) for _ in range(workers)]

    @property
    def size(self) -> int:
        return len(self._workers)

    def usable(self) -> bool:
        """False once closed, or in a forked child (the workers belong to the parent)."""
        return not self.closed and os.getpid() == self._pid

    def _replace(self, slot: int, kill: bool = True) -> None:
        self._workers[slot].stop(kill=kill)
        self._workers[slot] = _Worker(self._check)
        self.restarts += 1

    def map(self, pairs: Iterable[tuple[str, str]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bool]:
        """Check every (completion, gold) pair; a pair that times out or crashes its worker is False."""
        from multiprocessing.connection import wait

        timeout_s = _check_timeout(timeout_s)
        work = [(str(c), str(g)) for c, g in pairs]
        results = [False] * len(work)
        if not work:
            return results
        if not self.usable():
            raise RuntimeError("VerifierPool is closed or belongs to another process")
        limit = timeout_s + _GRACE_S
        with self._lock:
            todo = deque(range(len(work)))
            busy: dict[int, tuple[int, float]] = {}  # slot -> (pair index, kill time)
            start_failures = 0
            while todo or busy:
                for slot, w in enumerate(self._workers):
                    if todo and w.ready and slot not in busy:
                        i = todo.popleft()
                        try:
                            w.send_conn.send((i, *work[i], timeout_s))
                        except OSError:  # died while idle: retry the pair on a fresh worker
                            todo.appendleft(i)
                            self._replace(slot)
                            continue
                        busy[slot] = (i, time.monotonic() + limit)
                waiting = {w.conn: slot for slot, w in enumerate(self._workers) if slot in busy or not w.ready}
                next_kill = min((t for _, t in busy.values()), default=time.monotonic() + 1.0)
                for conn in wait(list(waiting), timeout=max(0.0, next_kill - time.monotonic())):
                    slot = waiting[conn]
                    w = self._workers[slot]
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        if slot in busy:
                            i, _ = busy.pop(slot)
                            log.warning("verify worker died on pair %d; counted as wrong", i)
                        elif not w.ready:
                            start_failures += 1
                            if start_failures > 3:
                                raise RuntimeError("verify workers keep dying at start-up; see their stderr above")
                        self._replace(slot)
                        continue
                    if msg == _READY:
                        w.ready = True
                        continue
                    i, ok = msg
                    busy.pop(slot, None)
                    results[i] = bool(ok)
                now = time.monotonic()
                for slot, (i, kill_at) in list(busy.items()):
                    if now >= kill_at:
                        busy.pop(slot)
                        log.warning("verify worker stuck on pair %d for %.1fs; killed, counted as wrong", i, limit)
                        self._replace(slot)
                for w in self._workers:
                    if not w.ready and now - w.started > _START_LIMIT_S:
                        raise RuntimeError(f"a verify worker did not start within {_START_LIMIT_S:.0f}s")
        return results

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self._pid:
            return
        for w in self._workers:
            w.stop()

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_SHARED: dict[int, VerifierPool] = {}
_SHARED_LOCK = threading.Lock()


def _shared_pool(workers: int) -> VerifierPool:
    # Pools live for the whole process: a training run calls the reward every step, and starting
    # workers costs about a second each.
    with _SHARED_LOCK:
        pool = _SHARED.get(workers)
        if pool is None or not pool.usable():
            pool = VerifierPool(workers)
            _SHARED[workers] = pool
        return pool


@atexit.register
def close_shared_pools() -> None:
    with _SHARED_LOCK:
        for pool in _SHARED.values():
            pool.close()
        _SHARED.clear()


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def verify_many(
    pairs: Iterable[tuple[str, str]],
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[bool]:
    """`is_equivalent` over (completion, gold) pairs, in order; never stalls, never raises on an answer.

    workers=None: a shared pool of `default_workers()` processes (kept for later calls);
    workers=0: in this process, one after another (from a non-main thread: a one-worker pool).
    """
    timeout_s = _check_timeout(timeout_s)
    work = [(str(c), str(g)) for c, g in pairs]
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise UserError(f"verify workers={workers}; need >= 0 (0 = in this process)")
    if not work:
        return []
    if workers == 0:
        if _in_main_thread():
            return [_with_deadline(check_answer, c, g, timeout_s) for c, g in work]
        workers = 1
    return _shared_pool(workers).map(work, timeout_s)


# ---------------------------------------------------------------- TRL reward


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a string, or chat messages (the assistant turns, joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:  # multimodal form: [{"type": "text", "text": …}, …]
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def math_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 when a completion's final answer equals `answer`, else 0.0."""
    if len(answer) != len(completions):
        raise ValueError(f"math_reward: {len(completions)} completions but {len(answer)} answers")
    texts = [completion_text(c) for c in completions]
    return [1.0 if ok else 0.0 for ok in verify_many(zip(texts, answer))]
