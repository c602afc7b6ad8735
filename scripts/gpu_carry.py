"""Carry the pinned stack to a GPU machine that has no internet, in parts small enough to send.

    python scripts/gpu_carry.py pack                 # here, with PyPI: wheels for the GPU machine's Python
    python scripts/gpu_carry.py install .gpu/part-1  # there, once per part, in order
    python scripts/gpu_carry.py check                # there: the stack imports at its pinned versions

`pack` resolves this project's dependencies (pyproject.toml) for the GPU machine's Python and
platform (default: CPython 3.12, manylinux x86_64) and downloads their wheels, except torch and
its CUDA libraries: the GPU machine brings its own torch (2.11 with CUDA 13 when last seen,
inside the project's `torch>=2.4,<2.14`). It then packs them into folders `.gpu/part-N` of at
most `--part-mib` each (a wheel larger than that, Ray's, is split into pieces), because a
device command carries at most 64 MiB. `install` puts a part's wheels into `.gpu/site` with
`pip install --no-index --no-deps --target` (nothing is fetched); `check` reads the versions
there. Run anything with `PYTHONPATH=$PWD/.gpu/site:$PWD`. `.gpu/` is git-ignored.
Step by step, with the device tool's calls: docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / ".gpu"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PLATFORMS += ("manylinux_2_24_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64")
THEIRS = "torch"  # what the GPU machine brings; stood in for while resolving (no CUDA wheels downloaded)
PINNED = ("transformers", "trl", "peft", "bitsandbytes", "datasets", "ray", "mlflow", "optuna", "pandas")


def requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [r for r in project["dependencies"] if not r.replace(" ", "").startswith(THEIRS)]


def stand_in(folder: Path, name: str, version: str) -> Path:
    """An empty wheel `name==version` with no dependencies: the resolver takes it for the GPU
    machine's own torch, so neither torch nor its nvidia-* packages are downloaded."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_carry\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return wheel


def pack(a) -> None:
    wheels = a.dir / "wheels"
    shutil.rmtree(a.dir, ignore_errors=True)
    wheels.mkdir(parents=True)
    # A local version label no index has: the resolver can only take the stand-in (a real wheel of
    # the same version would win over it by its more specific platform tag).
    version = f"{a.torch}+there"
    with tempfile.TemporaryDirectory() as tmp:
        stand_in(Path(tmp), THEIRS, version)
        (Path(tmp) / "constraints.txt").write_text(f"{THEIRS}=={version}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(wheels)]
        cmd += ["--python-version", a.python, "--implementation", "cp", "--find-links", tmp]
        cmd += ["--constraint", str(Path(tmp) / "constraints.txt")]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd + requirements(), check=True)
    (wheels / f"{THEIRS}-{version}-py3-none-any.whl").unlink(missing_ok=True)
    sizes = into_parts(wheels, a.dir, a.part_mib * 2**20)
    print(f"{len(sizes)} parts in {a.dir} ({sum(sizes) / 2**20:.0f} MiB): carry them one per command, in order")
    for n, size in enumerate(sizes, 1):
        print(f"  part-{n}: {size / 2**20:.0f} MiB")


def into_parts(wheels: Path, folder: Path, limit: int) -> list[int]:
    """Move the wheels in `wheels` into `folder/part-N` folders of at most `limit` bytes each,
    largest first (a wheel over the limit in pieces); their sizes."""
    parts: list[list[Path]] = []
    sizes: list[int] = []
    for wheel in sorted(wheels.glob("*.whl"), key=lambda w: -w.stat().st_size):
        for piece in _split(wheel, limit) if wheel.stat().st_size > limit else [wheel]:
            size = piece.stat().st_size
            i = next((i for i, s in enumerate(sizes) if s + size <= limit), None)
            if i is None:
                parts.append([])
                sizes.append(0)
                i = len(parts) - 1
            parts[i].append(piece)
            sizes[i] += size
    for n, files in enumerate(parts, 1):
        (folder / f"part-{n}").mkdir(parents=True)
        for f in files:
            f.rename(folder / f"part-{n}" / f.name)
    shutil.rmtree(wheels)
    return sizes


def _split(wheel: Path, limit: int) -> list[Path]:
    """`wheel` cut into pieces `<wheel>.piece-NN` of at most `limit` bytes (joined again by `install`)."""
    pieces = []
    with open(wheel, "rb") as f:
        while chunk := f.read(limit):
            piece = wheel.with_name(f"{wheel.name}.piece-{len(pieces):02d}")
            piece.write_bytes(chunk)
            pieces.append(piece)
    wheel.unlink()
    return pieces


def install(a) -> None:
    staged = a.dir / "staged"
    staged.mkdir(parents=True, exist_ok=True)
    for part in a.parts:
        for f in sorted(Path(part).iterdir()):
            shutil.copy(f, staged / f.name)
    # Whole wheels: those never split, and split ones whose every piece has arrived.
    for piece in sorted(staged.glob("*.whl.piece-00")):
        name = piece.name.removesuffix(".piece-00")
        pieces = sorted(staged.glob(f"{name}.piece-*"))
        with open(staged / name, "wb") as out:
            for p in pieces:
                out.write(p.read_bytes())
        if not _complete(staged / name):
            (staged / name).unlink()  # a piece is still to come with a later part
            continue
        for p in pieces:
            p.unlink()
    ready = sorted(staged.glob("*.whl"))
    if ready:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade"]
        subprocess.run(cmd + ["--target", str(a.dir / "site"), *map(str, ready)], check=True)
        for w in ready:
            w.unlink()
    left = sorted(p.name for p in staged.iterdir())
    print(f"installed {len(ready)} wheels into {a.dir / 'site'}" + (f"; waiting for {left}" if left else ""))


def _complete(wheel: Path) -> bool:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.testzip() is None
    except zipfile.BadZipFile:
        return False


def check(a) -> None:
    """The pinned libraries as Python sees them with .gpu/site first, and torch's CUDA."""
    code = (
        "import importlib.metadata as m, json, torch; "
        f"print(json.dumps({{n: m.version(n) for n in {list(PINNED)!r}}})); "
        "print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    )
    env = {"PYTHONPATH": f"{a.dir / 'site'}:{REPO}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    print(out.stdout + out.stderr)
    found = json.loads(out.stdout.splitlines()[0]) if out.returncode == 0 else {}
    project = " ".join(requirements())
    wrong = [f"{n} {v}" for n, v in found.items() if f"{n}=={v}" not in project and f"{n}[tune]=={v}" not in project]
    if out.returncode or wrong:
        sys.exit(f"not the pinned stack: {', '.join(wrong) or 'import failed'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=GPU, help="where parts, staged pieces and the site are (.gpu)")
    sub = p.add_subparsers(required=True)
    s = sub.add_parser("pack", help="here: download and pack the wheels")
    s.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    s.add_argument("--torch", default="2.11.0", help="the torch version the GPU machine has")
    s.add_argument("--part-mib", type=int, default=60, help="the most one part may hold (a command carries 64 MiB)")
    s.set_defaults(func=pack)
    s = sub.add_parser("install", help="there: install carried parts into .gpu/site")
    s.add_argument("parts", nargs="+", type=Path)
    s.set_defaults(func=install)
    s = sub.add_parser("check", help="there: the pinned versions import")
    s.set_defaults(func=check)
    a = p.parse_args(argv)
    missing = [str(part) for part in getattr(a, "parts", []) if not part.is_dir()]
    if missing:
        p.error(f"no such part folder: {missing[0]} (pack makes them: .gpu/part-1, .gpu/part-2, ...)")
    a.func(a)


if __name__ == "__main__":
    main()
