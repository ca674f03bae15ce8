"""Library noise (transformers/TRL/accelerate warnings, HF progress bars) goes to the run's own log
file, `runs/<run id>/library.log` (an evaluation's record's for `abcx eval`), instead of interleaving
with abcx's lines on the terminal or in a job log; abcx shows its own progress (abcx.progress).
Errors still reach stderr: only warnings and info are moved. A foundation, so that training,
evaluation and the testbed build route it the same way."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

LIBRARIES = ("py.warnings", "transformers", "trl", "accelerate", "datasets", "huggingface_hub", "torch", "wandb")


def quiet_progress_bars() -> None:
    """HF's tqdm bars ("Loading weights", "Writing model shards", datasets' "Map") off: abcx shows
    its own progress."""
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    if "datasets" in sys.modules:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    else:  # read when datasets is imported: no import (seconds) only to switch its bars off
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


class _LogFile(logging.FileHandler):
    """The library log: once it cannot be written (a full disk) it stops, silently. logging's default
    prints a traceback to stderr for every record that fails (28 of them on a disk that filled at the
    start); the run's own failure line says what happened."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # flushing onto a full disk
            pass


@contextmanager
def library_noise_to(log: Path):
    """Within the block: library warnings and log records below ERROR go to the file `log` (a run's
    RunRecord.library_log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    to_file = _LogFile(log, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    saved = {}
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = [to_file, errors]
        logger.propagate = False
    logging.captureWarnings(True)
    quiet_progress_bars()
    try:
        yield log
    finally:
        logging.captureWarnings(False)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        to_file.close()
