"""Early exit: exited tokens keep serving as keys/values (state propagation), calibration, exit loss, and
CALM's three confidence measures (each causal, batch-independent and decodable with a cache)."""

from dataclasses import replace

import pytest
import torch
from conftest import cached_decode, make, tokens

from sparsedepth import ConfigError
from sparsedepth.cache import KVCache
from sparsedepth.evaluate import batch_leak, causality_violation
from sparsedepth.model import apply_routed
from sparsedepth.routing.base import Decision
from sparsedepth.routing.early_exit import CONFIDENCE_RANGE, EarlyExitRouter, PropagatingDecision, consistent

MEASURES = list(CONFIDENCE_RANGE)
TOL = 1e-5


class ExitAtPosition(EarlyExitRouter):
    """Position 5 exits after block 1 (skips blocks 2, 3); everything else runs all blocks."""

    propagate = True

    def decide(self, h, layer):
        mask = torch.ones(h.shape[:2], dtype=torch.bool)
        if layer >= 2:
            mask[:, 5] = False
        cls = PropagatingDecision if self.propagate else Decision
        return cls(mask=mask, gate=torch.ones(h.shape[:2]))


def test_exited_token_still_serves_as_key_value_in_later_blocks(tiny_cfg):
    model = make("early_exit", tiny_cfg).eval()
    model.router.__class__ = ExitAtPosition
    idx = tokens(tiny_cfg, batch=2, length=12)
    propagated = model(idx)
    assert propagated.layers_per_token[0, 5] == 2 and propagated.layers_per_token[0, 4] == 4
    model.router.propagate = False  # same exits, but the exited token vanishes as a key (MoD-style skip)
    dropped = model(idx)
    torch.testing.assert_close(propagated.logits[:, :6], dropped.logits[:, :6])  # ≤ 5: unaffected
    assert (propagated.logits[:, 6:] - dropped.logits[:, 6:]).abs().max() > 1e-4  # later tokens saw it

    # and the propagated keys are exactly the exited token's frozen state: compare with the dense model
    # in which token 5's hidden state is frozen after block 1 but still attended to
    model.router.propagate = True
    h = model.wte(idx)
    positions = torch.arange(12)
    model.router.begin(h, positions)
    for i, block in enumerate(model.blocks):
        if i < 2:
            h = h + block.residual(h, model.rope, positions)
        else:
            frozen = h[:, 5].clone()
            h = h + block.residual(h, model.rope, positions)
            h[:, 5] = frozen
    torch.testing.assert_close(model.readout(h), propagated.logits, atol=2e-5, rtol=1e-4)


def test_propagating_block_caches_every_token(tiny_cfg):
    """In cached decoding an exited token's keys/values are appended in the blocks it skipped."""

    model = make("early_exit", tiny_cfg).eval()
    model.router.threshold.fill_(0.0)  # exit whenever possible
    idx = tokens(tiny_cfg, batch=1, length=10)
    cache = KVCache.empty(model, 1)
    out = model(idx, cache=cache)
    assert out.layers_per_token.mean() < tiny_cfg.n_layers  # tokens did exit
    assert torch.all(cache.lengths() == 10)  # yet every block cached all ten tokens


def test_calibration_hits_the_target_capacity(tiny_cfg):
    model = make("early_exit", tiny_cfg, capacity=0.6).eval()
    batches = [tokens(tiny_cfg, batch=4, length=32, seed=s) for s in range(2)]
    model.router.calibrate(model, batches)
    ran = torch.stack([model(x).routing.float().mean() for x in batches]).mean().item()
    assert abs(ran - 0.6) < 0.1, ran


def test_at_capacity_one_no_token_exits_and_nothing_is_scored(tiny_cfg):
    """LayerSkip training for self-speculation alone: the full model is every block, whatever the
    threshold."""
    model = make("early_exit", tiny_cfg, capacity=1.0).eval()
    model.router.threshold.fill_(-1.0)  # would exit every token at the first check if scored
    batches = [tokens(tiny_cfg, batch=2, length=16)]
    assert model.router.calibrate(model, batches) == -1.0  # nothing to calibrate
    assert model(batches[0]).routing.all()
    assert model.router.flops_per_token() == model.router.weight_flops_per_token()


def test_at_capacity_one_blocks_run_whole_and_equal_the_gathered_path(tiny_cfg, monkeypatch):
    """With no exits every decision is `whole`: the model runs each block as an unrouted one (no gather plan,
    no host sync: at batch-1 decoding that was half the time), with the same logits as the gathered path,
    in a full forward and in cached decoding."""
    model = make("early_exit", tiny_cfg, capacity=1.0).eval()
    idx = tokens(tiny_cfg, batch=2, length=12)
    seen = []
    real_decide = model.router.decide
    monkeypatch.setattr(model.router, "decide", lambda h, i: seen.append(real_decide(h, i)) or seen[-1])
    with torch.no_grad():
        whole, cached = model(idx).logits, cached_decode(model, idx, prompt=6)[0]
    assert seen and all(d.whole for d in seen)
    monkeypatch.setattr(model.router, "decide", lambda h, i: replace(real_decide(h, i), whole=False))
    with torch.no_grad():
        gathered = model(idx).logits
    assert torch.allclose(whole, gathered, atol=TOL) and torch.allclose(cached, whole, atol=1e-4)
    model.train()
    assert not model.router.decide(torch.zeros(2, 4, tiny_cfg.d_model), 1).whole  # layer dropout decides


def test_exit_loss_trains_early_layers_through_the_shared_head(tiny_cfg):
    model = make("early_exit", tiny_cfg).train()
    model.router.max_layer_dropout = 0.0
    idx = tokens(tiny_cfg)
    out = model(idx, idx)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.aux_loss.backward()  # the exit loss alone
    assert model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
    assert model.wte.weight.grad.abs().sum() > 0  # the shared (tied) head


def test_layer_dropout_rises_with_depth_and_is_per_sample(tiny_cfg):
    model = make("early_exit", tiny_cfg).train()
    model.router.max_layer_dropout = 0.5
    torch.manual_seed(0)
    ran = model(tokens(tiny_cfg, batch=64, length=8)).routing.float()  # [B, T, L]
    assert torch.all((ran == ran[:, :1]).all(dim=1))  # whole samples skip a block, never single tokens
    kept = ran[:, 0].mean(0)  # per block
    assert kept[0] == 1.0 and abs(kept[-1].item() - 0.5) < 0.15 and kept[-1] < kept[1]


def test_apply_routed_without_queries_skips_the_block(tiny_cfg):
    model = make("early_exit", tiny_cfg).eval()
    h = torch.randn(2, 6, tiny_cfg.d_model)
    nobody = PropagatingDecision(mask=torch.zeros(2, 6, dtype=torch.bool), gate=torch.ones(2, 6))
    assert torch.equal(apply_routed(model.blocks[1], h, nobody, model.rope, torch.arange(6)), h)


def test_rotational_curriculum_reads_out_alternate_layers_each_step(tiny_cfg):
    """LayerSkip's rotation: with rotation 2 each step's exit loss covers every other layer, alternating."""
    model = make("early_exit", tiny_cfg, capacity=0.5, rotation=2).train()
    idx = tokens(tiny_cfg)
    seen = []
    for _ in range(2):
        model(idx, idx)
        seen.append({layer for layer, _ in model.router.hidden})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(1, tiny_cfg.n_layers))
    assert "router.steps" in model.state_dict()  # the rotation phase is checkpointed (exact resume)


def test_read_layers_train_only_the_named_exits(tiny_cfg):
    """`read_layers`: the exit loss reads out those layers only (a self-speculative draft's exit), under the
    rotation as before; a layer no exit is checked at is refused in one line."""
    model = make("early_exit", tiny_cfg, capacity=1.0, read_layers=[2]).train()
    idx = tokens(tiny_cfg)
    for _ in range(2):
        model(idx, idx)
        assert [layer for layer, _ in model.router.hidden] == [2]
    rotating = make("early_exit", tiny_cfg, capacity=1.0, read_layers=[1, 2], rotation=2).train()
    seen = []
    for _ in range(2):
        rotating(idx, idx)
        seen.append([layer for layer, _ in rotating.router.hidden])
    assert sorted(seen) == [[1], [2]]
    with pytest.raises(ConfigError, match=r"read_layers \[0\]"):
        make("early_exit", tiny_cfg, read_layers=[0])


def calibrated(cfg, confidence: str, capacity: float = 0.5):
    """An untrained model whose threshold is calibrated so that tokens do exit, at different depths."""
    model = make("early_exit", cfg, capacity=capacity, confidence=confidence).eval()
    model.router.calibrate(model, [tokens(cfg, batch=4, length=48, seed=3)])
    return model


@pytest.mark.parametrize("confidence", MEASURES)
def test_each_measure_is_causal_batch_independent_and_decodes_like_the_full_pass(confidence, tiny_cfg):
    model = calibrated(tiny_cfg, confidence)
    seq = tokens(tiny_cfg, batch=3, length=40)
    full = model(seq)
    assert full.layers_per_token.unique().numel() > 1  # the test has teeth: exits at several depths
    for t in (0, 10, 30):
        assert causality_violation(model, seq, t) < TOL, f"{confidence} leaks the future into {t}"
    for sample in (0, 2):
        assert batch_leak(model, seq, sample) < TOL
    logits, layers, cache = cached_decode(model, seq)
    torch.testing.assert_close(logits, full.logits, atol=3e-5, rtol=1e-4)
    assert torch.equal(layers, full.layers_per_token)
    assert torch.all(cache.lengths() == 40)  # propagation: every block cached every token


@pytest.mark.parametrize("confidence", MEASURES)
def test_calibration_covers_each_measure_range(confidence, tiny_cfg):
    model = calibrated(tiny_cfg, confidence, capacity=0.6)
    low, high = CONFIDENCE_RANGE[confidence]
    assert low <= model.router.threshold.item() <= high
    ran = model(tokens(tiny_cfg, batch=4, length=48, seed=3)).routing.float().mean().item()
    assert abs(ran - 0.6) < 0.1, ran


def test_classifier_labels_are_causal_and_its_loss_trains_only_the_classifier(tiny_cfg):
    model = make("early_exit", tiny_cfg, confidence="classifier", max_layer_dropout=0.0).train()
    idx = tokens(tiny_cfg, batch=2)
    changed = idx.clone()
    changed[:, 21:] = tokens(tiny_cfg, batch=2, seed=9)[:, 21:]

    def labels(x):
        out = model(x, x)
        return torch.stack([consistent(model.readout(h), out.logits) for _, h in model.router.hidden])

    a, b = labels(idx), labels(changed)
    assert a.shape[0] == tiny_cfg.n_layers - 1  # rotation 1: every checked layer is labelled each step
    assert torch.equal(a[..., :21], b[..., :21])  # a label sees no later token

    model = make("early_exit", tiny_cfg, confidence="classifier", exit_loss_weight=0.0).train()
    out = model(idx, idx)
    out.aux_loss.backward()  # the classifier's BCE alone
    assert all(c.weight.grad.abs().sum() > 0 for c in model.router.classifier)
    trunk = [p for name, p in model.named_parameters() if not name.startswith("router.")]
    assert all(p.grad is None for p in trunk)  # stop-gradient: the trunk never sees the classifier


def test_unknown_confidence_is_rejected(tiny_cfg):
    with pytest.raises(ConfigError, match="confidence"):
        make("early_exit", tiny_cfg, confidence="entropy")
