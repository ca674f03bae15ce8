"""Backends that run sweep points as jobs through submitit: `local` (a supervisor process bounding
concurrency) and `slurm` (job arrays); `job` is the picklable, checkpointable unit both submit."""
