"""The benchmark harness: what it times is correct, and its table is well formed. Speed is never asserted."""

import pandas as pd
import pytest
import torch
from conftest import ROUTED, spread

from sparsedepth import ROUTERS, ModelConfig
from sparsedepth.bench import COLUMNS, BenchConfig, calibrate, main, make_model, origin_grid, parser, run_grid
from sparsedepth.bench.cli import config_from_flags
from sparsedepth.config import ConfigError
from sparsedepth.origin_reference import flat_forward

CFG = ModelConfig(vocab_size=4096, d_model=32, n_layers=4, n_heads=2, max_seq_len=32)
CPU = torch.device("cpu")
TRUNK = 3.0  # `spread`'s block scaling for CFG: at its default (10) states at this width saturate halting
TINY = ["--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--batch", "2", "--seq", "16",
        "--decode-prompt", "6", "--decode-new", "3", "--decode-batch", "2", "--repeats", "2", "--warmup", "1",
        "--device", "cpu", "--threads", "1"]


def tokens(batch=3, length=24, seed=0):
    return torch.randint(0, CFG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("router", ROUTED)
@pytest.mark.parametrize("train", [False, True])
def test_timed_gather_path_equals_the_masked_reference(router, train):
    """The routed fast path the benchmark times (every block routed, weights spread so routing is not
    uniform, then calibrated) computes what the slow masked reference computes, forward and backward."""
    idx = tokens()
    fast, slow = (spread(make_model(router, CFG, 0.5, CPU, train, route_every=1), tokens(4, 16, 1), idx,
                         trunk=TRUNK) for _ in range(2))
    slow.hard_skip = False
    torch.manual_seed(1)
    a = fast(idx, idx)
    torch.manual_seed(1)
    b = slow(idx, idx)
    torch.testing.assert_close(a.logits, b.logits, atol=2e-5, rtol=1e-4)
    assert torch.equal(a.routing, b.routing)
    if train:
        a.loss.backward()
        b.loss.backward()
        for (name, p), q in zip(fast.named_parameters(), slow.parameters(), strict=True):
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("router", ROUTED)
def test_calibration_puts_an_untrained_router_at_its_capacity(router):
    """On other tokens than it was fitted on; a rule that keeps whole blocks (uniform at inference) can only
    hit a multiple of 1/n, n routed blocks."""
    model = make_model(router, CFG, 0.25, CPU, False, route_every=2)
    calibrate(model, tokens(8, 32, 2))
    model.router.set_inference("causal")
    with torch.no_grad():
        ran = model(tokens(8, 32, 3)).routing[..., model.router.routed_layers].float().mean().item()
    step = 1 / len(model.router.routed_layers) if "inference" in ROUTERS[router].uniform_routing else 0
    assert abs(ran - 0.25) < 0.1 + step / 2


def test_harness_writes_the_contract_columns_for_every_kind(tmp_path):
    out = tmp_path / "bench.csv"
    impls = ["--impls", "gather,masked,origin-flat"]
    assert main(["--out", str(out), "--routers", "mod,probe", *impls, *TINY]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert set(df["kind"]) == {"train_step", "prefill", "decode"}
    assert (df["device"] == "cpu").all() and df["device_name"].str.startswith("CPU").all()
    assert (df["threads"] == 1).all() and df["git_sha"].notna().all()
    dense = df[df["router"] == "dense"]
    assert len(dense) == 3 and (dense["speedup"] == 1).all() and (dense["ideal_speedup"] == 1).all()
    assert (df["median_ms"] > 0).all() and (df["speedup"] > 0).all() and (df["tokens_per_s"] > 0).all()
    routed = df[df["router"] != "dense"]
    assert (routed["ideal_speedup"] >= 1).all()  # routing never costs more FLOPs than dense
    assert ((routed["efficiency"] - routed["speedup"] / routed["ideal_speedup"]).abs() < 1e-9).all()
    assert (df["layers_per_token"] <= 2).all() and (routed["layers_per_token"] < 2).all()
    assert set(df[df["kind"] == "prefill"]["impl"]) == {"gather", "masked", "origin-flat"}
    assert set(df[df["impl"] == "origin-flat"]["router"]) == {"probe"}
    assert (df["peak_activation_mb"] > 0).all()


def test_bf16_and_adamw_variants_run(tmp_path):
    out = tmp_path / "bench.csv"
    variant = ["--dtype", "bf16", "--optimizer", "adamw"]
    assert main(["--out", str(out), "--routers", "mod", *variant, *TINY]) == 0
    df = pd.read_csv(out)
    assert set(df["impl"]) == {"gather+bf16"} and (df[df["router"] == "dense"]["speedup"] == 1).all()


def test_a_failing_compile_is_skipped_not_fatal(tmp_path, monkeypatch, capsys):
    def broken(model, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no toolchain")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "bench.csv"
    assert main(["--out", str(out), "--routers", "mod", "--kinds", "prefill", "--compile", *TINY]) == 0
    assert set(pd.read_csv(out)["impl"]) == {"gather"}
    assert "no toolchain" in capsys.readouterr().out


def test_time_budget_skips_and_lists_points():
    bench = BenchConfig(routers=["random"], kinds=["prefill"], batch=[1, 2], seq=[8], d_model=16, n_layers=2,
                        n_heads=2, repeats=1, warmup=0, max_seconds=0.0)
    rows, skipped = run_grid(bench, progress=lambda s: None)
    assert rows == [] and len(skipped) == 2


def test_unknown_names_are_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown router"):
        run_grid(BenchConfig(routers=["nope"]))
    with pytest.raises(ConfigError, match="unknown impl"):
        run_grid(BenchConfig(impls=["fast"]))
    assert main(["--out", str(tmp_path / "x.csv"), "--kinds", "nope"]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_every_config_field_is_a_flag_with_help(capsys):
    """BenchConfig's flags come from the dataclass (as TrainConfig's do), each with its help text."""
    import dataclasses

    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(BenchConfig):
        assert f.metadata.get("help") and f"--{f.name}" in text, f.name
    args = ["--out", "x.csv", "--routers", "mod,threshold", "--batch", "2,4", "--no-calibrate", "--compile",
            "--max-seconds", "5", "--d-model", "64"]
    bench = config_from_flags(parser().parse_args(args))
    assert bench == BenchConfig(routers=["mod", "threshold"], batch=[2, 4], calibrate=False, compile=True,
                                max_seconds=5.0, d_model=64)
    origin = config_from_flags(parser().parse_args(["--out", "x.csv", "--grid", "origin", *args[2:]]))
    run = dict(calibrate=False, compile=True, max_seconds=5.0)
    assert origin == dataclasses.replace(origin_grid(), **run)  # size/grid flags ignored, run settings kept
    with pytest.raises(ConfigError, match="device"):
        config_from_flags(parser().parse_args(["--out", "x.csv", "--device", "tpu"]))


def test_merge_concatenates_tables_and_rejects_others(tmp_path):
    rows = {c: [1] for c in COLUMNS}
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    parts = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert main(["merge", "--out", str(tmp_path / "m.csv"), *parts]) == 0
    assert len(pd.read_csv(tmp_path / "m.csv")) == 2
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "c.csv", index=False)
    assert main(["merge", "--out", str(tmp_path / "n.csv"), str(tmp_path / "c.csv")]) == 2


def test_origin_flat_ablation_has_the_documented_flaw():
    """The origin project's flattened batch mixes samples: changing sample 1 changes sample 0's logits,
    which our per-sample gather never does (tested for every router in test_model). It is also not
    causal: changing a later token changes an earlier one."""
    model = make_model("probe", CFG, 0.5, CPU, False, route_every=1)
    with torch.no_grad():
        model.router.probe.bias.fill_(3.0)  # every token runs most blocks, so the flattening matters
        idx = tokens(2, 16)
        a, ran = flat_forward(model, idx)
        assert a.shape == (2, 16, CFG.vocab_size) and ran.shape == (2, 16, CFG.n_layers)
        assert ran[..., 0].all() and ran.sum(-1).float().mean() > 1
        other_sample = idx.clone()
        other_sample[1] = (other_sample[1] + 1) % CFG.vocab_size
        assert (a[0] - flat_forward(model, other_sample)[0][0]).abs().max() > 1e-4  # crossed batch items
        later = idx.clone()
        later[0, -1] = (later[0, -1] + 1) % CFG.vocab_size
        assert (a[0, 0] - flat_forward(model, later)[0][0, 0]).abs().max() > 1e-4  # saw the future
        ours = model(idx).logits
        assert torch.equal(ours[0], model(other_sample).logits[0])
        assert torch.equal(ours[0, :-1], model(later).logits[0, :-1])


@pytest.mark.parametrize("router", ROUTED)
def test_timed_decode_path_equals_the_full_forward(router, monkeypatch):
    """Cached decoding as the benchmark times it (spread and calibrated, every block routed, causal rule,
    batch where samples disagree on a block, so the row-subset path runs) gives the full forward pass's
    logits."""
    import sparsedepth.skipping as model_module
    from sparsedepth.cache import KVCache

    calls = []
    original = model_module._apply_rows
    monkeypatch.setattr(model_module, "_apply_rows", lambda *a, **k: calls.append(1) or original(*a, **k))
    seq = tokens(4, 30, 2)
    model = make_model(router, CFG, 0.5, CPU, False, route_every=1)
    model.router.set_inference("causal")
    spread(model, tokens(4, 32, 1), seq, trunk=TRUNK)
    with torch.no_grad():
        full = model(seq).logits
        cache = KVCache.empty(model, 4)
        steps = [model(seq[:, :10], cache=cache).logits]
        steps += [model(seq[:, t:t + 1], cache=cache).logits for t in range(10, 30)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=1e-4)
    # the row-subset path runs exactly when, at some decoded position, samples disagree on a block (a rule
    # whose skipped tokens still give K/V runs the block on every sample)
    ran = model(seq).routing[:, 10:, model.router.routed_layers]
    disagree = bool((ran.any(0) & ~ran.all(0)).any()) and not model.router.propagates_state
    assert bool(calls) == disagree


def test_memory_rows_compare_with_dense_beside_their_ideal(tmp_path):
    """prefill_cached rows (generation's prefill: fresh cache, last-position head) and the memory columns:
    ratios to dense in the same table, the ideal beside them, cache bytes where a cache is built."""
    out = tmp_path / "bench.csv"
    assert main(["--out", str(out), "--routers", "mod", "--kinds", "prefill_cached,decode,train_step",
                 *TINY]) == 0
    df = pd.read_csv(out)
    assert set(df["kind"]) == {"prefill_cached", "decode", "train_step"}
    dense = df[df["router"] == "dense"]
    assert (dense["memory_ratio"] == 1).all() and (dense["ideal_memory_ratio"] == 1).all()
    cached = df[df["kind"].isin(["prefill_cached", "decode"])]
    assert (cached["cache_bytes_per_sample_block"] > 0).all()
    assert df[df["kind"] == "train_step"]["cache_bytes_per_sample_block"].isna().all()
    routed = df[df["router"] != "dense"]
    assert (routed["ideal_memory_ratio"] < 1).all() and (routed["memory_ratio"] > 0).all()


def test_merge_fills_columns_added_later(tmp_path):
    from sparsedepth.bench.config import ADDED_COLUMNS

    old = {c: [1] for c in COLUMNS if c not in ADDED_COLUMNS}
    pd.DataFrame(old).to_csv(tmp_path / "old.csv", index=False)
    assert main(["merge", "--out", str(tmp_path / "m.csv"), str(tmp_path / "old.csv")]) == 0
    merged = pd.read_csv(tmp_path / "m.csv")
    assert list(merged.columns) == COLUMNS and merged[list(ADDED_COLUMNS)].isna().all().all()


def test_small_batch_pricing_spans_the_flop_count_and_the_padded_batch():
    """`decode_flops` with ρ = 1/B is the FLOP count itself; ρ = 1 prices a block at its whole batch
    whenever any sample ran it; the price grows with ρ; dense decoding costs the same at any ρ."""
    from sparsedepth.bench.cases import decode_case

    bench = BenchConfig(repeats=1, warmup=0)
    costs = {}
    for router in ("dense", "mod"):
        case = decode_case(make_model(router, CFG, 0.25, CPU, False, calibrate_on=tokens(4, 32, 1)),
                           8, 12, 4, CPU, bench)
        _, flops, _ = case.stats()
        costs[router] = [case.small_batch_flops(rho) for rho in (None, 0.25, 0.5, 1.0)]
        assert costs[router][1] == pytest.approx(flops) and costs[router][0] == pytest.approx(flops)
    assert costs["dense"] == pytest.approx([costs["dense"][0]] * 4)
    mod = costs["mod"]
    assert mod[1] < mod[2] < mod[3] < costs["dense"][0]  # some block steps ran on no sample at all


def test_decode_rows_say_what_the_hardware_lets_routing_reach(tmp_path):
    """Batched decoding rows carry ρ (dense on one sample over dense on the batch, timed in the same
    point), the padded and attainable ideals between 1 and the FLOP ideal, and the attainable efficiency;
    batch 1 needs no ρ (its attainable ideal is the FLOP ideal); other kinds have none."""
    out = tmp_path / "bench.csv"
    assert main(["--out", str(out), "--routers", "mod", "--kinds", "decode,prefill", *TINY,
                 "--decode-batch", "1,4"]) == 0  # the last flag wins
    df = pd.read_csv(out)
    decode = df[df["kind"] == "decode"]
    assert sorted(decode["batch"].unique()) == [1, 4] and len(decode) == 4  # no row for the extra case
    assert df[df["kind"] == "prefill"][["small_batch_cost", "attainable_speedup"]].isna().all().all()
    one, four = decode[decode["batch"] == 1], decode[decode["batch"] == 4]
    assert (one["small_batch_cost"] == 1).all()
    assert one["attainable_speedup"].tolist() == pytest.approx(one["ideal_speedup"].tolist())
    assert four["small_batch_cost"].nunique() == 1 and four["small_batch_cost"].between(0.25, 1).all()
    mod = four[four["router"] == "mod"].iloc[0]
    assert mod["padded_ideal_speedup"] <= mod["attainable_speedup"] + 1e-9
    assert mod["attainable_speedup"] <= mod["ideal_speedup"] + 1e-9
    assert mod["attainable_efficiency"] == pytest.approx(mod["speedup"] / mod["attainable_speedup"])
