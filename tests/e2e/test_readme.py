"""The README's "Use" commands run as written, top to bottom (parsed from README.md, so they cannot drift): on the
embedded `shapes` dataset, and on SCR lung from ../shared/data (skipped when absent; slow)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def use_blocks() -> list[list[str]]:
    """The bash blocks of README.md's "## Use" section, each as its command lines (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def block_for(dataset: str) -> list[str]:
    return next(b for b in use_blocks() if f"--dataset {dataset}" in b[0])


def run_as_written(lines: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Each line as a user types it (pairgen/segbench → this interpreter's -m), in `cwd`, default workspace."""
    env = {k: v for k, v in os.environ.items() if k != "PAIRGEN_WORKSPACE"}
    env["OMP_NUM_THREADS"] = "1"
    done = []
    for line in lines:
        tool, *args = shlex.split(line, comments=True)
        assert tool in ("pairgen", "segbench"), line
        proc = subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        done.append(proc)
    return done


def check_report(cwd: Path, dataset: str, done: list[subprocess.CompletedProcess]) -> None:
    runs = sorted((cwd / "workspace" / dataset / "fold1" / "seg").glob("0*"))
    assert [r.name.split("-", 1)[1] for r in runs] == ["4-4-Aug", "8-0-Aug"]
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["complete"] is True
    report = cwd / "workspace" / dataset / "fold1" / "seg" / "report"   # report's default: beside the runs
    compared = json.loads((report / "report.json").read_text())["comparisons"]
    assert {(c["a"], c["b"]) for c in compared} >= {("4-4-Aug", "8-0-Aug")}
    assert "4-4-Aug" in done[-1].stdout and "8-0-Aug" in done[-1].stdout
    for name in ("report.md", "qualitative.png", "per_category.png"):
        assert (report / name).is_file(), name


def test_readme_names_the_datasets_users_have_first() -> None:
    firsts = [shlex.split(block[0])[3] for block in use_blocks() if block[0].startswith("pairgen train")]
    assert firsts[:2] == ["shapes", "scr-lung"]
    assert "flip" not in " ".join(block_for("scr-lung"))   # the README never flips lungs


def test_readme_chain_on_shapes(tmp_path: Path) -> None:
    lines = block_for("shapes")
    done = run_as_written(lines, tmp_path)
    check_report(tmp_path, "shapes", done)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "scr-lung").is_dir(), reason="../shared/data/scr-lung absent")
def test_readme_chain_on_scr_lung(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    cwd.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)   # the README's ../shared/data/scr-lung, read-only as it is
    done = run_as_written(block_for("scr-lung"), cwd)
    check_report(cwd, "scr-lung", done)
