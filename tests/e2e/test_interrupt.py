"""Ctrl-C keeps work: SIGINT during `pairgen train` / `segbench run` saves a checkpoint, prints the resume command
and exits 130; running that command continues from the saved step and ends exactly where an uninterrupted run
ends (CPU, one thread: deterministic)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pairgen.checkpoint import load_checkpoint


def _env(ws: Path) -> dict[str, str]:
    return {**os.environ, "PAIRGEN_WORKSPACE": str(ws), "OMP_NUM_THREADS": "1"}


def _command(tool: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", tool, *args]


def _interrupt_when(cmd: list[str], ws: Path, ready, timeout: float = 300) -> subprocess.CompletedProcess:
    """Start `cmd`, send SIGINT once ready() is true (training has logged), return the finished process."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(ws))
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{cmd} ended before it could be interrupted:\n{proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _run(cmd: list[str], ws: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(ws), timeout=300)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _resume_command(stderr: str) -> list[str]:
    match = re.search(r"resume with: (.*)$", stderr, re.MULTILINE)
    assert match, stderr
    return shlex.split(match.group(1))


def _logged(path: Path) -> bool:
    """The run's log.jsonl holds a line: training is under way (a GAN tick, a segbench validation)."""
    return path.is_file() and bool(path.read_text().strip())


def test_ctrl_c_during_pairgen_train_keeps_work(tmp_path: Path) -> None:
    args = ["train", "--dataset", "shapes", "--preset", "tiny", "--iters", "60"]
    ws = tmp_path / "ws"
    run = ws / "shapes" / "fold1" / "gan" / "00000-tiny"
    stopped = _interrupt_when(_command("pairgen", args), ws, lambda: _logged(run / "log.jsonl"))
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    checkpoints = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    step = int(checkpoints[-1].stem.split("-")[1])
    assert 10 <= step < 60   # written on the interrupt, not at the end
    assert f"SIGINT at step {step}" in stopped.stderr

    command = _resume_command(stopped.stderr)
    assert command[:3] == ["pairgen", "train", "--resume"] and Path(command[3]) == run
    resumed = _run(_command("pairgen", command[1:]), ws)
    assert f"resuming {run} at step {step}" in resumed.stderr

    straight = tmp_path / "straight"
    _run(_command("pairgen", args), straight)
    a = load_checkpoint(run / "checkpoints" / "ckpt-0000060.pt")
    b = load_checkpoint(straight / "shapes" / "fold1" / "gan" / "00000-tiny" / "checkpoints" / "ckpt-0000060.pt")
    for part in ("generator", "critic"):
        for name, value in a[part].items():
            assert torch.equal(value, b[part][name]), f"{part}.{name}"


def test_ctrl_c_during_segbench_run_keeps_work(tmp_path: Path) -> None:
    from pairgen.prepare import prepare

    ws = tmp_path / "ws"
    prepare("shapes", None, 1, 32, 32, workspace=ws)
    args = ["run", "--real", "8", "--synth", "0", "--preset", "tiny", "--max-iters", "400", "--min-iters", "400"]
    out = tmp_path / "run"
    stopped = _interrupt_when(_command("segbench", [*args, "--out", str(out)]), ws,
                              lambda: _logged(out / "log.jsonl"))
    assert stopped.returncode == 130, stopped.stderr
    match = re.search(r"SIGINT at iteration (\d+)", stopped.stderr)
    assert match, stopped.stderr
    iteration = int(match.group(1))
    assert 20 <= iteration < 400 and (out / "training_state.pt").is_file()

    command = _resume_command(stopped.stderr)
    assert command[:4] == ["segbench", "run", "--resume", "--out"] and Path(command[4]) == out
    resumed = _run(_command("segbench", command[1:]), ws)
    assert f"resuming {out} at iteration {iteration}" in resumed.stderr

    straight = tmp_path / "straight"
    _run(_command("segbench", [*args, "--out", str(straight)]), ws)
    a = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    b = torch.load(straight / "weights.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in b)

    def records(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
                for line in (run / "log.jsonl").read_text().splitlines()]

    assert records(out) == records(straight)   # train losses included: the running sum was saved too
