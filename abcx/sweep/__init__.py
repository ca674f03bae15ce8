"""Sweeps: sweep files and command-line axes -> points (spec), validated configs and states (plan),
the manifest, and the functions `abcx sweep ...` calls (command). Backends live in abcx.launch."""
