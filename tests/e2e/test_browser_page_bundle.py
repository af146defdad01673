"""The browser agent's page bundle is what its locked sources build.

``examples/browser/page.bundle.js`` is committed so that the README's browser command needs no
Node.js; this test rebuilds it from ``page.js`` with the locked npm packages (esbuild, Pipecat's
client library) and compares the bytes, so the committed file cannot drift from its sources.
Skips without npm (fails under ``CI=true``, where ``.ci/run`` installs the packages first).
"""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "examples" / "browser"


def test_committed_bundle_matches_a_fresh_build(tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is needed in CI to check the page bundle")
        pytest.skip("npm not found: it builds the page bundle from its sources")
    if not (PAGE / "node_modules" / ".package-lock.json").exists():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PAGE,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            if os.environ.get("CI") == "true":
                pytest.fail(f"npm ci failed: {done.stderr[-500:]}")
            pytest.skip(f"npm ci could not fetch the page's packages: {done.stderr[-500:]}")
    # The package's own build command, writing elsewhere.
    build = shlex.split(json.loads((PAGE / "package.json").read_text())["scripts"]["build"])
    out = tmp_path / "page.bundle.js"
    build = [f"--outfile={out}" if a.startswith("--outfile=") else a for a in build]
    esbuild = PAGE / "node_modules" / ".bin" / build[0]
    subprocess.run([str(esbuild), *build[1:]], cwd=PAGE, check=True)
    assert out.read_bytes() == (PAGE / "page.bundle.js").read_bytes(), (
        "examples/browser/page.bundle.js is stale: cd examples/browser && npm ci && npm run build"
    )
