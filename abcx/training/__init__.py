"""Training: config -> model, task, trainer -> run record (train.py); the TRL subclass and its glue."""
