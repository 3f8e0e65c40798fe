"""Promise 9: a run or output folder has one writer at a time. A second `pairgen export --out`, `train --resume` or
`segbench run --resume` on a folder in use is refused in one line; a lock left by a dead process is taken over.
(Before: two exports into one --out both printed success with a manifest naming the wrong seed for most shards,
and two resumes of one run both trained, every log line twice.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pairgen.core.errors import UserError
from tests.pairgen.test_export import make_checkpoint
from tests.segbench.test_run import make_workspace, quick

ROOT = Path(__file__).resolve().parents[2]
HOLD = """import sys, time
try:
    from pairgen.core.locks import lock
except ImportError:   # code without locks (to see these tests fail there): a process using the folder
    from contextlib import nullcontext as lock
with lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def holder(directory: Path) -> subprocess.Popen:
    """Another process holding `directory`'s lock (as a running export or training would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_export_into_the_same_out_is_refused(tmp_path: Path) -> None:
    from pairgen.export import export

    checkpoint = make_checkpoint(tmp_path / "ws" / "scr-lung" / "fold1" / "gan" / "00000-tiny")
    out = tmp_path / "out"
    proc = holder(out)
    try:
        with pytest.raises(UserError, match=rf"{out}: in use by process {proc.pid}"):
            export(checkpoint, out, 8, seed=1, samples_per_shard=4, device="cpu", show_progress=False, resume=True)
    finally:
        proc.kill()
        proc.wait()
    assert not list(out.glob("shard-*"))   # nothing written by the refused export


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pairgen.export import export

    checkpoint = make_checkpoint(tmp_path / "ws" / "scr-lung" / "fold1" / "gan" / "00000-tiny")
    out = tmp_path / "out"
    out.mkdir()
    pid = dead_pid()
    os.symlink(f"{socket.gethostname()}:{pid}", out / ".lock")
    export(checkpoint, out, 8, samples_per_shard=4, device="cpu", show_progress=False)
    assert f"taking over the stale lock {out / '.lock'} of process {pid}" in capsys.readouterr().err
    assert (out / "manifest.json").is_file() and not (out / ".lock").is_symlink()   # released at the end


def test_a_lock_from_another_host_is_never_taken_over(tmp_path: Path) -> None:
    from pairgen.core.locks import lock

    os.symlink(f"elsewhere.invalid:{dead_pid()}", tmp_path / ".lock")
    with pytest.raises(UserError, match="on elsewhere.invalid"):
        with lock(tmp_path):
            pass


def test_second_segbench_resume_on_one_run_is_refused(tmp_path: Path) -> None:
    from segbench.run import run

    ws = make_workspace(tmp_path / "ws")
    out = tmp_path / "run"
    run(quick(max_iters=2), ws, out=out, show_progress=False)
    (out / "summary.json").unlink()   # an unfinished run, as a crash leaves it
    log_lines = len((out / "log.jsonl").read_text().splitlines())
    proc = holder(out)
    try:
        with pytest.raises(UserError, match=f"in use by process {proc.pid}"):
            run(quick(max_iters=4), ws, out=out, resume=True, show_progress=False)
    finally:
        proc.kill()
        proc.wait()
    assert len((out / "log.jsonl").read_text().splitlines()) == log_lines   # the refused resume wrote nothing


def test_second_gan_resume_is_refused_in_one_line(tmp_path: Path) -> None:
    from tests.fixtures import make_real_split
    from tests.pairgen.test_export import CONFIG

    ws = tmp_path / "ws"
    run_dir = ws / "scr-lung" / "fold1" / "gan" / "00000-tiny"
    make_checkpoint(run_dir)
    CONFIG.save(run_dir / "config.json")
    make_real_split(ws / "scr-lung" / "fold1" / "real" / f"{CONFIG.height}x{CONFIG.width}" / "train", 8,
                    height=CONFIG.height, width=CONFIG.width)
    proc = holder(run_dir)
    try:
        result = subprocess.run([sys.executable, "-m", "pairgen", "train", "--resume", str(run_dir),
                                 "--workspace", str(ws)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"in use by process {proc.pid}" in result.stderr


def test_a_numbered_run_holds_its_folder_while_it_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started without --out owns its new numbered folder too: a `run --resume --out` on it is refused."""
    import segbench.train
    from segbench.run import run

    ws = make_workspace(tmp_path / "ws")
    train = segbench.train.train_segmentation
    seen: list[bool] = []

    def resume_meanwhile(config, model, batches, val, run_dir, **kwargs):
        seen.append((Path(run_dir) / ".lock").is_symlink())
        with pytest.raises(UserError, match="already locked by this process"):
            run(quick(), ws, out=run_dir, resume=True, show_progress=False)
        return train(config, model, batches, val, run_dir, **kwargs)

    monkeypatch.setattr(segbench.train, "train_segmentation", resume_meanwhile)
    run_dir = run(quick(), ws, show_progress=False)
    assert seen == [True] and not (run_dir / ".lock").is_symlink()   # released at the end
