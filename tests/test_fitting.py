"""`routing.fitting`: an untrained router put at its capacity leaves no token on its decision boundary."""

import torch
from conftest import make, tokens

from sparsedepth.routing.fitting import _cut


def test_a_cut_at_a_quantile_that_is_a_logit_moves_between_logits():
    """The 0.5 quantile of 0..4 is the logit 2: the cut keeps what the quantile keeps (3, 4) from midway."""
    logits = torch.arange(5.0)
    assert _cut(logits, 0.5) == 2.5
    assert _cut(torch.tensor([4.0, 3.0, 2.0, 1.0]), 0.5) == 2.5
    assert _cut(logits, 0.0) > 4 and _cut(logits, 1.0) < 0  # none kept / all kept: outside every logit


def test_fitted_probe_leaves_every_token_off_its_thresholds(tiny_cfg):
    """The probe's bisected bias ends mid-interval: no token's margin to a block's threshold is tiny (at the
    interval's edge one was ~1e-11, and a prefill and a decode step routed it differently)."""
    model = make("probe", tiny_cfg, capacity=0.4).eval()
    with torch.no_grad():
        model.router.probe.weight.normal_(0, 3.0)
    idx = tokens(tiny_cfg)
    model.router.fit_capacity(model, idx)
    with torch.no_grad():
        model(idx)
        margins = torch.stack([model.router.logit - model.router._threshold_logit(layer, torch.float32)
                               for layer in model.router.routed_layers])
    assert margins.abs().min() > 1e-4
