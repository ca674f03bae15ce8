"""The GPU check's offline bundle: wheels of what bench/gpu_check.py needs that the GPU image lacks.

The GPU machines this project borrows are offline: they start from an image that holds Python 3.12,
CUDA torch, transformers 5.17, accelerate and the scientific stack (IMAGE), but not TRL, Hydra or
datasets, and at most 64 MiB travel with the working tree. `download` (make gpu-wheels, where the
package index is reachable) fetches the wheels of BUNDLE for the image's Python into a folder, with
the testbed model built here (saving the device the minutes of building it on one core); `install`
(bench/gpu_check.py --wheels, on the GPU machine) installs them with `pip --no-index --no-deps
--target`, so nothing is fetched there and nothing of the image is replaced.

    python bench/gpu_bundle.py download DIR [--python-version 3.12] [--no-testbed]
    python bench/gpu_bundle.py install DIR SITE
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 60 * 2**20  # 64 MiB may travel; the rest is headroom for the working tree's own files
MANIFEST = "manifest.json"
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")

# What the image holds, each with its own dependencies; httpx (and with it certifi and idna) is the
# dependency of its huggingface-hub 1.x (transformers 5.17 wants <2) that datasets 5.0 uses as well.
IMAGE = ("torch", "transformers", "accelerate", "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "typer", "rich",
         "pyyaml", "tqdm", "xxhash", "safetensors", "tokenizers", "huggingface_hub", "sympy", "pytest", "hypothesis",
         "httpx")


@dataclass(frozen=True)
class Wheel:
    requirement: str
    why: str
    build: bool = False  # no wheel on the index: built here, and it must come out pure Python


# Only what the checks that can run there import: `abcx train` with logger=none (no wandb), the testbed's
# chain task (no math-verify), no sweep (no optuna, SQLAlchemy), no vLLM (hundreds of MB: cannot travel).
BUNDLE = (
    Wheel("trl==1.16.0", "the trainer abcx extends (pyproject: trl>=1.16,<1.17); accepts transformers>=4.56.2"),
    Wheel("datasets==5.0.0", "TRL's and the tasks' Dataset; the newest that accepts huggingface-hub<2, "
                             "which transformers 5.17 requires (datasets 5.1+ wants >=1.31, 5.2 on CPU)"),
    Wheel("dill==0.4.1", "datasets"),
    Wheel("requests==2.34.2", "datasets 5.0 (the image's huggingface-hub 1.x uses httpx, not requests)"),
    Wheel("urllib3==2.8.0", "requests"),
    Wheel("charset-normalizer==3.5.3", "requests (its idna and certifi come with the image's httpx)"),
    Wheel("multiprocess==0.70.19", "datasets"),
    Wheel("hydra-core==1.3.8", "abcx's config"),
    Wheel("omegaconf==2.3.1", "hydra-core (omegaconf 2.4 makes pip downgrade hydra-core)"),
    Wheel("antlr4-python3-runtime==4.9.3", "hydra-core's override parser (4.9 only); sdist only", build=True),
    Wheel("submitit==1.5.4", "imported by `abcx train` (abcx.launch.job)"),
    Wheel("cloudpickle==3.1.3", "submitit"),
)


def requirement_name(req: str) -> str:
    return req.split("==")[0].lower().replace("_", "-")


# ------------------------------------------------------------------------------------------ download
def download(dest: Path, python_version: str = "3.12", testbed: bool = True, pip: list[str] | None = None) -> dict:
    """Fetch BUNDLE's wheels for `python_version` (and the testbed model) into `dest`, replacing what it held."""
    pip = pip or [sys.executable, "-m", "pip"]
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fetched = [w.requirement for w in BUNDLE if not w.build]
        tag = python_version.replace(".", "")
        _pip(pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
             "--implementation", "cp", "--abi", f"cp{tag}", *(a for p in PLATFORMS for a in ("--platform", p)),
             "-d", str(tmp), *fetched)
        for w in (w for w in BUNDLE if w.build):
            before = set(tmp.glob("*.whl"))
            _pip(pip, "wheel", "--no-deps", "-w", str(tmp), w.requirement)
            for path in set(tmp.glob("*.whl")) - before:
                if not path.name.endswith("-py3-none-any.whl"):  # built for this machine, not the image
                    raise SystemExit(f"{path.name}: a wheel built here must be pure Python to travel")
        wheels = sorted(tmp.glob("*.whl"))
        manifest = {"python_version": python_version, "platforms": list(PLATFORMS),
                    "wheels": [{"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in wheels],
                    "testbed": _copy_testbed(tmp) if testbed else None}
        manifest["total_bytes"] = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        if manifest["total_bytes"] > LIMIT_BYTES:
            raise SystemExit(f"the bundle is {manifest['total_bytes'] / 2**20:.1f} MiB, over its "
                             f"{LIMIT_BYTES / 2**20:.0f} MiB limit")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _pip(pip: list[str], *args: str) -> None:
    proc = subprocess.run([*pip, *args, "--quiet", "--disable-pip-version-check"], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"pip {args[0]} failed (exit {proc.returncode}); see above")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_testbed(dest: Path) -> dict:
    """The default tiny model, built (or taken from the cache) here, so that the device does not build it."""
    from abcx.testbed import ensure_tiny_model, read_testbed_info

    source = ensure_tiny_model()
    shutil.copytree(source, dest / "testbed" / source.name)
    info = read_testbed_info(source)
    return {"folder": source.name, "built_with": info.get("versions"), "parameters": info.get("parameters")}


def summary_lines(manifest: dict, dest: Path) -> list[str]:
    lines = [f"gpu-wheels: {dest} for Python {manifest['python_version']} ({', '.join(manifest['platforms'])})"]
    lines += [f"  {w['bytes'] / 2**10:8.0f} KiB  {w['file']}" for w in manifest["wheels"]]
    if manifest["testbed"]:
        size = sum(f.stat().st_size for f in (dest / "testbed").rglob("*") if f.is_file())
        lines.append(f"  {size / 2**10:8.0f} KiB  testbed/{manifest['testbed']['folder']} (the tiny model, "
                     f"built with {manifest['testbed']['built_with']})")
    lines.append(f"  total {manifest['total_bytes'] / 2**20:.2f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    return lines


# ------------------------------------------------------------------------------------------ install
def install(wheels: Path, site: Path, cache: Path) -> dict[str, str]:
    """Install the bundle into `site` (nothing from the network; idempotent), seed the testbed model into
    `cache`; returns the environment variables under which abcx and the bundle import."""
    manifest = read_manifest(wheels)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python_version"] != here:
        raise SystemExit(f"{wheels} holds wheels for Python {manifest['python_version']}, this is Python {here}; "
                         f"rebuild it with make gpu-wheels GPU_PYVER={here}")
    stamp = site / ".bundle.json"
    wanted = json.dumps(manifest["wheels"], sort_keys=True)
    if not (stamp.is_file() and stamp.read_text() == wanted):
        if site.exists():
            shutil.rmtree(site)
        for w in manifest["wheels"]:
            if not (wheels / w["file"]).is_file() or _sha256(wheels / w["file"]) != w["sha256"]:
                raise SystemExit(f"{wheels / w['file']}: missing or not the file {MANIFEST} lists; "
                                 f"rebuild the bundle with make gpu-wheels")
        _install_wheels([wheels / w["file"] for w in manifest["wheels"]], site)
        stamp.write_text(wanted)
    if manifest.get("testbed"):
        folder = cache / "testbed" / manifest["testbed"]["folder"]
        if not folder.exists():
            shutil.copytree(wheels / "testbed" / folder.name, folder)
    path = [str(site), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), "ABCX_CACHE": str(cache)}


def _install_wheels(files: list[Path], site: Path) -> None:
    if _has_pip():
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), "--quiet",
               "--disable-pip-version-check"]
        print(f"gpu-check: {' '.join(cmd)} <{len(files)} wheels of {files[0].parent}>", flush=True)
        subprocess.run([*cmd, *map(str, files)], check=True)
    else:  # an image without pip: a wheel installs by unpacking it (the scripts it may carry are not needed)
        print(f"gpu-check: no pip here; unpacking {len(files)} wheels into {site}", flush=True)
        for f in files:
            with zipfile.ZipFile(f) as z:
                z.extractall(site)


def read_manifest(wheels: Path) -> dict:
    try:
        return json.loads((wheels / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{wheels}: no readable {MANIFEST} ({type(err).__name__}); make it with make gpu-wheels")


def _has_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def unmet_requirements() -> list[str]:
    """Requirements of the bundled distributions that the image + bundle do not meet (installed --no-deps,
    so nothing checked them): one line each, for the check's README."""
    from importlib.metadata import PackageNotFoundError, distribution, version

    from packaging.requirements import Requirement

    lines = []
    for w in BUNDLE:
        name = requirement_name(w.requirement)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            lines.append(f"{name} is not installed")
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                lines.append(f"{name} wants {req}; not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                lines.append(f"{name} wants {req}; {req.name} {have} is here")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/gpu_bundle.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="fetch the wheels (needs the package index)")
    d.add_argument("dest", type=Path)
    d.add_argument("--python-version", default="3.12", help="the GPU image's Python (default 3.12)")
    d.add_argument("--no-testbed", action="store_true", help="leave the tiny model out")
    i = sub.add_parser("install", help="install a bundle offline (bench/gpu_check.py --wheels does this)")
    i.add_argument("wheels", type=Path)
    i.add_argument("site", type=Path)
    i.add_argument("--cache", type=Path, default=None, help="the ABCX_CACHE to seed (default: abcx-cache beside SITE)")
    opts = ap.parse_args(argv)
    if opts.command == "download":
        manifest = download(opts.dest, opts.python_version, testbed=not opts.no_testbed)
        print("\n".join(summary_lines(manifest, opts.dest.resolve())))
    else:
        env = install(opts.wheels, opts.site.resolve(), (opts.cache or opts.site.parent / "abcx-cache").resolve())
        print("\n".join(f"{k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
