"""Using synthetic pairs: the synthetic rows' loss weight, synthetic pre-training then fine-tuning, and how both
(with --synth-filter) show in the run ID, the report's configurations, its GAN-score columns and sweep labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pairgen.core.errors import UserError
from pairgen.shards import load_shards
from segbench.graphed import GraphedTrainStep
from segbench.mixing import MixedBatches, RealSource, ShardSynthSource
from segbench.presets import make_config, synth_use_tag
from segbench.run import run, run_label
from segbench.step import make_optimizer, prepare_model, row_weights, segmentation_loss, train_step
from segbench.train import EarlyStopping, train_segmentation
from segbench.unet import build_unet
from tests.fixtures import kill_after_save, make_real_split
from tests.segbench.test_report import binary, make_run, quiet
from tests.segbench.test_run import make_synthetic_export, make_workspace, quick

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ loss weight


def test_weighted_loss_on_a_hand_case() -> None:
    # row 0 (real): logit 0 → ln 2 per pixel; row 1 (synthetic): logit ln 3, foreground → −ln(3/4) per pixel
    logits = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), math.log(3.0))])
    masks = torch.tensor([[[0, 1], [1, 0]], [[1, 1], [1, 1]]])
    weights = row_weights(torch.tensor([False, True]), 0.5)
    assert weights.tolist() == [1.0, 0.5]
    expected = (math.log(2) + 0.5 * math.log(4 / 3)) / 1.5
    assert segmentation_loss(logits, masks, row_weights=weights).item() == pytest.approx(expected, rel=1e-6)
    plain = segmentation_loss(logits, masks)
    assert plain.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)
    assert row_weights(torch.tensor([False, True]), 1.0) is None       # W = 1: the plain mean, no weights at all
    # equal weights (a pre-training batch: every row synthetic) are the plain mean
    assert segmentation_loss(logits, masks, row_weights=torch.full((2,), 0.5)).item() == pytest.approx(plain.item())
    # several classes: softmax cross-entropy weighted the same way
    logits3 = torch.zeros(2, 3, 1, 1)
    logits3[1, 2] = math.log(2.0)   # row 1, class 2: p = 2/4 → −ln(1/2)
    masks3 = torch.tensor([[[0]], [[2]]])
    got = segmentation_loss(logits3, masks3, row_weights=torch.tensor([1.0, 3.0])).item()
    assert got == pytest.approx((math.log(3) + 3 * math.log(2)) / 4, rel=1e-6)


def test_weight_is_validated_and_needs_synthetic_rows() -> None:
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(UserError, match="synth-weight"):
            make_config("test-discs", "tiny", synth_weight=bad)
    with pytest.raises(UserError, match="--synth M > 0"):
        make_config("test-discs", "tiny", synth_weight=0.5, synth_per_batch=0)
    with pytest.raises(UserError, match="pretrain-synth"):
        make_config("test-discs", "tiny", pretrain_iters=-1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("d")
    train = load_shards(make_real_split(root / "train", 8, height=16, width=16, seed=0))
    val = load_shards(make_real_split(root / "val", 4, height=16, width=16, split="val", seed=1))
    return train, val, make_synthetic_export(root / "synth", n=8, size=16)


def tiny(**overrides):
    values = dict(depth=2, filters=4, min_iters=3, patience=3, max_iters=3, val_every=3, real_per_batch=2,
                  synth_per_batch=2, seed=3, lr=1e-3)
    values.update(overrides)
    return make_config("test-discs", "tiny", **values)


def mixed(config, data, pretrain: bool = False):
    train, _, synth_dir = data
    generator = torch.Generator().manual_seed(config.seed)
    synth = ShardSynthSource(load_shards(synth_dir), CPU)
    batches = MixedBatches(RealSource(train, CPU), synth, config.real_per_batch, config.synth_per_batch, generator)
    return batches, (MixedBatches(None, synth, 0, config.batch_size, generator) if pretrain else None)


def test_weight_one_trains_exactly_as_the_unweighted_step(data, tmp_path: Path) -> None:
    """W = 1: bit for bit the training of the plain per-pixel mean (train_step without weights, as before)."""
    config = tiny(synth_weight=1.0)
    torch.manual_seed(config.seed)
    model = build_unet(config, 1, 2)
    batches, _ = mixed(config, data)
    train_segmentation(config, model, batches, data[1], tmp_path, show_progress=False)

    torch.manual_seed(config.seed)
    reference = prepare_model(build_unet(config, 1, 2), CPU)
    optimizer = make_optimizer(reference, config)
    again, _ = mixed(config, data)
    for _ in range(config.max_iters):   # one validation, at the last iteration: its parameters are kept
        images, masks, _ = next(again)
        train_step(reference, optimizer, images, masks, config.amp)
    for (name, value), ref in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, ref), name

    torch.manual_seed(config.seed)
    weighted = build_unet(config, 1, 2)
    batches, _ = mixed(tiny(synth_weight=0.25), data)
    train_segmentation(tiny(synth_weight=0.25), weighted, batches, data[1], tmp_path / "w", show_progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(weighted.state_dict().values(), model.state_dict().values()))


def test_graphed_step_reads_the_weights_from_a_static_buffer() -> None:
    config = tiny()
    generator = torch.Generator().manual_seed(0)
    data = [(torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1,
             torch.randint(0, 2, (4, 16, 16), generator=generator), torch.tensor([1.0, 1.0, w, w]))
            for w in (0.5, 2.0, 0.5, 3.0)]

    def fresh():
        torch.manual_seed(0)
        model = prepare_model(build_unet(config, 1, 2), CPU)
        return model, make_optimizer(model, config)

    model, optimizer = fresh()
    eager = [train_step(model, optimizer, i, m, config.amp, weights=w) for i, m, w in data]
    graph_model, graph_optimizer = fresh()
    step = GraphedTrainStep(graph_model, graph_optimizer, config.amp, warmup=2)
    graphed = [step(i, m, w) for i, m, w in data]
    assert step.static_weights is not None and step.static_weights.tolist() == [1.0, 1.0, 3.0, 3.0]
    assert torch.equal(torch.stack(eager), torch.stack(graphed))
    for value, ref in zip(graph_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(value, ref)
    with pytest.raises(ValueError, match="weights"):
        step(data[0][0], data[0][1])


# ------------------------------------------------------------------------------------------------ pre-training


def test_early_stopping_counts_from_the_end_of_pretraining() -> None:
    stopper = EarlyStopping(min_iters=4, patience=2, start=10)
    assert stopper.update(6, 0.5)                 # a pre-training minimum
    assert not stopper.should_stop(10) and not stopper.should_stop(12)   # min_iters counts from 10
    assert stopper.should_stop(14)                # 4 after the start, 4 ≥ 2 after max(6, 10)
    assert not stopper.update(12, 0.6) and stopper.best_iteration == 6   # kept: truly the best on val
    restored = EarlyStopping(0, 0)
    restored.load_state_dict(stopper.state_dict())
    assert restored.start == 10


class Counting(MixedBatches):
    """Records how many synthetic rows each batch it hands out has."""

    def __init__(self, wrapped: MixedBatches, seen: list) -> None:
        self.__dict__.update(wrapped.__dict__)
        self.seen = seen

    def __next__(self):
        images, masks, is_synthetic = super().__next__()
        self.seen.append(int(is_synthetic.sum()))
        return images, masks, is_synthetic


def test_pretraining_draws_synthetic_batches_then_the_mix(data, tmp_path: Path) -> None:
    config = tiny(real_per_batch=3, synth_per_batch=0, pretrain_iters=4, val_every=3, min_iters=3, patience=3,
                  max_iters=6)
    torch.manual_seed(config.seed)
    model = build_unet(config, 1, 2)
    batches, pretrain = mixed(config, data, pretrain=True)
    seen: list[int] = []
    result = train_segmentation(config, model, Counting(batches, seen), data[1], tmp_path, show_progress=False,
                                pretrain_batches=Counting(pretrain, seen))
    assert seen[:4] == [3] * 4 and seen[4:] == [0] * (len(seen) - 4)   # K + M = 3 synthetic rows, then 3 real
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # validations every 3 and at the end of pre-training (4); no stop before 4 + min_iters = 7
    assert [(r["iteration"], r["phase"]) for r in log][:3] == [(3, "pretrain"), (4, "pretrain"), (6, "train")]
    assert result["iterations"] >= 7 and result["iterations"] <= 10
    assert result["best_iteration"] == min(log, key=lambda r: r["val_loss"])["iteration"]   # over the whole run


def test_pretrain_run_resumes_exactly_and_is_labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed during pre-training and resumed equals an uninterrupted one (16-0 style fine-tuning: M = 0)."""
    import functools

    from segbench import train as train_module

    ws = make_workspace(tmp_path / "ws", n_train=4, n_val=2, n_test=2)
    config = quick(real_per_batch=2, synth_per_batch=0, pretrain_iters=3, max_iters=3, min_iters=3, patience=3,
                   lr=1e-3)
    monkeypatch.setattr(train_module, "train_segmentation",
                        functools.partial(train_module.train_segmentation, checkpoint_seconds=0))
    reference = run(config, ws, show_progress=False)
    assert reference.name == "00000-2-0-NoAug-pre3"
    saved = json.loads((reference / "config.json").read_text())
    assert saved["pretrain_iters"] == 3 and saved["synth_shards"]   # the synthetic data is recorded though M = 0

    out = tmp_path / "killed"
    kill_after_save(monkeypatch, train_module, 2)
    with pytest.raises(KeyboardInterrupt):
        run(config, ws, out=out, show_progress=False)
    assert run(config, ws, out=out, resume=True, show_progress=False) == out
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "wall_s"}   # noqa: E731
                          for line in (path / "log.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["phase"]) for r in strip(out)][:3] == [(1, "pretrain"), (2, "pretrain"),
                                                                      (3, "pretrain")]
    assert strip(out) == strip(reference)
    weights = [torch.load(d / "weights.pt", weights_only=True)["state_dict"] for d in (out, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


# ------------------------------------------------------------------------------------------------ labels, report


def test_labels_show_every_non_default_use() -> None:
    assert synth_use_tag() == "" and run_label(8, 8, False) == "8-8-NoAug"
    assert synth_use_tag("top=50%", 0.5, 500) == "top50-w0.5-pre500"
    assert synth_use_tag("q>=0.8") == "q0.8" and synth_use_tag(synth_weight=2) == "w2"
    config = make_config("test-discs", "tiny", real_per_batch=8, synth_per_batch=8, synth_filter="top=50%",
                         synth_weight=0.5, pretrain_iters=500)
    assert run_label(8, 8, False, config.synth_use) == "8-8-NoAug-top50-w0.5-pre500"
    # a filter without synthetic rows or pre-training draws nothing: not part of the ID
    assert make_config("test-discs", "tiny", synth_per_batch=0, synth_filter="q>=0.5").synth_use == ""


def test_report_tells_uses_apart_and_shows_the_gans_scores(tmp_path: Path) -> None:
    from segbench.report import report

    export = make_synthetic_export(tmp_path / "export")
    (export / "score.json").write_text(json.dumps({"alignment": {"mean": 0.75, "q05": 0.1}, "fd": 12.5}))
    make_run(tmp_path / "r" / "base", binary([0.9, 0.8, 0.7]))
    mix = make_run(tmp_path / "r" / "mix", binary([0.8, 0.8, 0.7]), real=8, synth=8)
    weighted = make_run(tmp_path / "r" / "weighted", binary([0.85, 0.8, 0.7]), real=8, synth=8)
    for run_dir, extra in ((mix, {}), (weighted, {"synth_weight": 0.5, "synth_filter": "top=50%"})):
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**config, "synth_shards": str(export), **extra}))
    pre = make_run(tmp_path / "r" / "pre", binary([0.95, 0.8, 0.7]))   # 16-0 fine-tuned after pre-training
    config = json.loads((pre / "config.json").read_text())
    (pre / "config.json").write_text(json.dumps({**config, "pretrain_iters": 200}))

    result = report([tmp_path / "r"], out=tmp_path / "rep", metrics=["dice"], console=quiet(), n_boot=10)
    rows = {r["label"]: r for r in result["configurations"]}
    assert set(rows) == {"16-0-NoAug", "8-8-NoAug", "8-8-NoAug-top50-w0.5", "16-0-NoAug-pre200"}
    assert rows["8-8-NoAug-top50-w0.5"]["synth_use"] == "top50-w0.5"
    assert (rows["8-8-NoAug"]["gan_alignment"], rows["8-8-NoAug"]["gan_fd"]) == (0.75, 12.5)
    assert rows["16-0-NoAug"]["gan_fd"] is None and rows["16-0-NoAug-pre200"]["gan_fd"] is None  # no export named
    # the baseline is the plain real-only configuration, never the pre-trained one
    assert {(c["a"], c["b"]) for c in result["comparisons"]} == {
        (label, "16-0-NoAug") for label in rows if label != "16-0-NoAug"}
    csv_lines = (tmp_path / "rep" / "report.csv").read_text().splitlines()
    header = csv_lines[0].split(",")
    assert "gan_alignment" in header and "gan_fd" in header
    by_label = {line.split(",")[1]: line.split(",") for line in csv_lines[1:]}
    assert by_label["8-8-NoAug"][header.index("gan_fd")] == "12.5"
    assert by_label["16-0-NoAug"][header.index("gan_fd")] == ""
    assert "GAN FD" in (tmp_path / "rep" / "report.md").read_text()


def test_sweep_labels_carry_the_use(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from segbench.sweep import load_manifest, seg_config

    path = tmp_path / "m.toml"
    path.write_text('dataset = "test-discs"\n[seg]\nsynth_weight = 0.5\n'
                    '[[config]]\nreal = 8\nsynth = 8\nsynth_filter = "top=50%"\n'
                    '[[config]]\nreal = 16\nsynth = 0\npretrain_iters = 500\nsynth_weight = 1.0\n')
    manifest = load_manifest(path)
    assert [e.label for e in manifest.entries] == ["8-8-NoAug-top50-w0.5", "16-0-NoAug-pre500"]
    # the pre-trained 16-0 row is handed the fold's export although M = 0
    task = SimpleNamespace(entry=manifest.entries[1], fold=1, seed=0)
    config = seg_config(manifest, task, "tiny", tmp_path / "real", tmp_path / "export", None)
    assert (config.pretrain_iters, config.synth_weight, config.synth_shards) == (500, 1.0, str(tmp_path / "export"))


def test_rank_rows_and_their_weights_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes, rank 1, K = 2 real + M = 1 synthetic per rank: the global batch is 4 real then 2 synthetic
    rows; rank 1 trains rows 2, 3 (real) and 5 (synthetic), and in pre-training rows 3, 4, 5 (all synthetic)."""
    from types import SimpleNamespace

    from pairgen.core import distributed
    from segbench.train import _rank_rows

    monkeypatch.setattr(distributed, "rank", lambda: 1)
    mix = SimpleNamespace(real_per_batch=4, synth_per_batch=2, device=CPU)
    rows = _rank_rows(2, 1, mix, world=2)
    assert rows.tolist() == [2, 3, 5]
    is_synthetic = torch.tensor([False] * 4 + [True] * 2)
    assert row_weights(is_synthetic[rows], 0.5).tolist() == [1.0, 1.0, 0.5]
    pretrain = SimpleNamespace(real_per_batch=0, synth_per_batch=6, device=CPU)
    assert _rank_rows(0, 3, pretrain, world=2).tolist() == [3, 4, 5]


def test_gan_scores_of_a_generator_run_and_damaged_files(tmp_path: Path) -> None:
    from segbench.report import gan_scores

    run_dir = tmp_path / "gan"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"synth_source": "generator", "checkpoint": str(run_dir / "checkpoints" / "ckpt-00001.pt")}
    assert gan_scores(config) is None
    (run_dir / "score.json").write_text(json.dumps({"alignment": {"mean": 0.5}, "fd": 3}))
    assert gan_scores(config) == {"alignment": 0.5, "fd": 3.0}
    (run_dir / "score.json").write_text(json.dumps({"alignment": 0.5, "fd": 3}))   # not score.json's format
    assert gan_scores(config) is None
