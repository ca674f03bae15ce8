"""Library noise to the run's library.log: the implementation lives in abcx.libraries (a foundation,
so that `abcx eval` and the testbed build, below training, route it the same way)."""
from abcx.libraries import LIBRARIES, library_noise_to, quiet_progress_bars

__all__ = ["LIBRARIES", "library_noise_to", "quiet_progress_bars"]
