"""The benchmark harness: what it times is correct, and its table is well formed. Speed is never asserted."""

import pandas as pd
import pytest
import torch

from sparsedepth import ModelConfig
from sparsedepth.bench import COLUMNS, BenchConfig, main, make_model, run_grid
from sparsedepth.config import ConfigError
from sparsedepth.seed_reference import flat_forward

CFG = ModelConfig(vocab_size=4096, d_model=32, n_layers=4, n_heads=2, max_seq_len=32)


@pytest.mark.parametrize("router", ["mod", "seed", "threshold", "random"])
@pytest.mark.parametrize("train", [False, True])
def test_timed_gather_path_equals_the_masked_reference(router, train):
    """The routed fast path the benchmark times computes what the slow masked reference computes."""
    cpu = torch.device("cpu")
    fast = make_model(router, CFG, 0.25, cpu, train)
    slow = make_model(router, CFG, 0.25, cpu, train)
    slow.hard_skip = False
    idx = torch.randint(0, CFG.vocab_size, (3, 24), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = fast(idx, idx)
    torch.manual_seed(1)
    b = slow(idx, idx)
    torch.testing.assert_close(a.logits, b.logits, atol=2e-5, rtol=1e-4)
    assert torch.equal(a.layers_per_token, b.layers_per_token)


def test_harness_writes_the_contract_columns_for_every_kind(tmp_path):
    out = tmp_path / "bench.csv"
    code = main(["--out", str(out), "--routers", "mod,seed", "--impls", "gather,masked,seed-flat",
                 "--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--batch", "2", "--seq", "16",
                 "--decode-prompt", "6", "--decode-new", "3", "--decode-batch", "2", "--repeats", "2",
                 "--warmup", "1", "--device", "cpu", "--threads", "1"])
    assert code == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert set(df["kind"]) == {"train_step", "prefill", "decode"}
    assert (df["device"] == "cpu").all() and df["device_name"].str.startswith("CPU").all()
    dense = df[df["router"] == "dense"]
    assert len(dense) == 3 and (dense["speedup"] == 1).all() and (dense["ideal_speedup"] == 1).all()
    assert (df["median_ms"] > 0).all() and (df["speedup"] > 0).all()
    gathered = df[(df["impl"] == "gather") & (df["router"] != "dense")]
    assert (gathered["ideal_speedup"] >= 1).all()  # routed never costs more FLOPs than dense
    assert (gathered["efficiency"] - gathered["speedup"] / gathered["ideal_speedup"]).abs().max() < 1e-9
    assert set(df[df["kind"] == "prefill"]["impl"]) == {"gather", "masked", "seed-flat"}
    train = df[df["kind"] == "train_step"]
    assert (train["peak_activation_mb"] > 0).all()  # saved-for-backward bytes


def test_time_budget_skips_and_lists_points():
    bench = BenchConfig(routers=["random"], kinds=["prefill"], batch=[1, 2], seq=[8], d_model=16, n_layers=2,
                        n_heads=2, repeats=1, warmup=0, max_seconds=0.0)
    rows, skipped = run_grid(bench, progress=lambda s: None)
    assert rows == [] and len(skipped) == 2


def test_unknown_router_or_kind_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown router"):
        run_grid(BenchConfig(routers=["nope"]))
    assert main(["--out", str(tmp_path / "x.csv"), "--kinds", "nope"]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_merge_concatenates_tables_and_rejects_others(tmp_path):
    rows = {c: [1] for c in COLUMNS}
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    parts = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert main(["merge", "--out", str(tmp_path / "m.csv"), *parts]) == 0
    assert len(pd.read_csv(tmp_path / "m.csv")) == 2
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "c.csv", index=False)
    assert main(["merge", "--out", str(tmp_path / "n.csv"), str(tmp_path / "c.csv")]) == 2


def test_seed_flat_ablation_has_the_documented_flaw():
    """The seed project's flattened batch mixes samples: changing sample 1 changes sample 0's logits,
    which our per-sample gather never does (tested for every router in test_model)."""
    model = make_model("seed", CFG, 0.5, torch.device("cpu"), False)
    with torch.no_grad():
        model.router.probe.bias.fill_(3.0)  # every token runs most blocks, so the flattening matters
        idx = torch.randint(0, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
        changed = idx.clone()
        changed[1] = (changed[1] + 1) % CFG.vocab_size
        a, layers = flat_forward(model, idx)
        b, _ = flat_forward(model, changed)
        assert layers.shape == (2, 16) and a.shape == (2, 16, CFG.vocab_size)
        assert (a[0] - b[0]).abs().max() > 1e-4  # information crossed batch items
        ours_a, ours_b = model(idx).logits, model(changed).logits
        assert torch.equal(ours_a[0], ours_b[0])


def test_compiled_rows_are_timed_against_compiled_dense(tmp_path):
    """The torch.compile path (eager backend here: the plumbing, not the compiler, is under test)."""
    out = tmp_path / "bench.csv"
    code = main(["--out", str(out), "--routers", "mod", "--impls", "gather,compiled", "--kinds", "prefill",
                 "--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--batch", "2", "--seq", "16",
                 "--repeats", "2", "--warmup", "1", "--device", "cpu", "--compile-backend", "eager"])
    assert code == 0
    df = pd.read_csv(out).set_index(["router", "impl"])
    expected = {("dense", "gather"), ("dense", "compiled"), ("mod", "gather"), ("mod", "compiled")}
    assert expected <= set(df.index)
    assert df.loc[("dense", "compiled"), "speedup"] == 1.0
    assert df.loc[("mod", "compiled"), "layers_per_token"] == df.loc[("mod", "gather"), "layers_per_token"]
