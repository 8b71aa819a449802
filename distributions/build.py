"""Build the two wheels of this tree: mse-node-agent (the appliance's) and mseportal.

    python distributions/build.py [--out DIR]      # default: dist/

Each is built by pip with its pyproject.toml's backend (setuptools), from a clean copy of
the tree in a temporary directory: setuptools builds in place and keeps a build/ folder,
so a file deleted from the checkout would otherwise still ship, and two builds at once
would share it. The copy holds only what the two pyproject files name (no tests, var/,
.venv or staticfiles/); the pyproject files decide what goes into each wheel.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGENT = Path("distributions") / "agent"
# what the two pyproject files read: the packages, the portal's templates and static files
TREES = ("nodeagent", "mseportal", "hapairs", "templates", "static")
FILES = ("pyproject.toml", "README.md", str(AGENT / "pyproject.toml"))
SKIP = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", "devkeys")


def stage(dest: Path) -> None:
    """Copy what the builds read from the checkout into dest."""
    for name in TREES:
        shutil.copytree(REPO / name, dest / name, ignore=SKIP)
    for name in FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)


def build(out: Path, *, quiet: bool = True) -> list[Path]:
    """Build both wheels into out; returns their paths (agent first)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mse-build-") as tmp:
        src = Path(tmp) / "src"
        stage(src)
        built = Path(tmp) / "wheels"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(built)]
        subprocess.run([*cmd, *(["--quiet"] if quiet else []), str(src / AGENT), str(src)], check=True)
        wheels = []
        for prefix in ("mse_node_agent-", "mseportal-"):
            (whl,) = built.glob(f"{prefix}*.whl")
            wheels.append(Path(shutil.copy2(whl, out / whl.name)))
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the mse-node-agent and mseportal wheels.")
    p.add_argument("--out", default=str(REPO / "dist"), help="where the wheels go (default: dist/)")
    p.add_argument("--verbose", action="store_true", help="show pip's output")
    a = p.parse_args(argv)
    try:
        wheels = build(Path(a.out), quiet=not a.verbose)
    except subprocess.CalledProcessError as e:
        print(f"build: pip wheel failed (exit {e.returncode})", file=sys.stderr)
        return 1
    for w in wheels:
        print(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
