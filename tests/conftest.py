"""Suite-wide test settings and shared fixtures (plain helper functions live in tests/fixtures.py).

No test module imports another test module: what two modules share is a fixture here or a helper there.
"""

from pathlib import Path

import pytest
import torch

from tests.fixtures import make_real_tree, run_cli


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test nets are tiny: intra-op threads only add synchronisation (10×+ slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16×16 real shard tree (10 train, 2 val, 2 test discs) for GAN training tests; one per test module."""
    return make_real_tree(tmp_path_factory.mktemp("real"), n_train=10, n_val=2, n_test=2, height=16, width=16)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """cli("pairgen" | "segbench", *ARGS) runs the command in-process (tests.fixtures.run_cli) → (code, out, err)."""
    return lambda tool, *args: run_cli(monkeypatch, capsys, tool, *args)
