"""The one interface every router implements, and the decision it hands the model.

A router sees the hidden state entering a routed block and says which tokens run it. The model does the
gathering (hard skipping), so a router is only a scoring rule plus its auxiliary loss. Every hook that the
model, training, evaluation, FLOP accounting, the benchmark and the HF wrapper call is declared on `Router`
with a default, so callers never probe a router with `hasattr` and a new router's author sees here what
they must provide (`decide`) and what they may (everything else).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig

if TYPE_CHECKING:
    from ..model import SparseDepthModel


@dataclass
class Decision:
    """Which tokens run a block, and the multiplier on their block output.

    `index` ([B, K], sorted positions) is set when every sample keeps exactly K tokens (top-k style): the
    model then gathers without padding and without a device→host sync. `propagate`: skipped tokens still
    serve as keys/values (their current hidden state) in this block (early exit's state propagation).
    `whole`: the router knows without looking that every token runs the block with gate 1 (an exit router
    that never exits), so the model runs it as an unrouted block: no gather plan, no device→host sync, which
    at batch-1 decoding is most of a routed block's cost.
    """

    mask: Tensor  # [B, T] bool
    gate: Tensor  # [B, T] float; value 1 for straight-through routers, gradient flows through it
    index: Tensor | None = None
    propagate: bool = False
    whole: bool = False


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value of `hard`, gradient of `soft` (Bengio et al. 2013)."""
    return hard.to(soft.dtype) + soft - soft.detach()


def topk_index(scores: Tensor, k: int) -> Tensor:
    """Per-row top-k positions, sorted so the gathered tokens keep their causal order."""
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def topk_choice(scores: Tensor, capacity: float, valid: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Per-row top-k at `capacity`: the mask and, when every row keeps the same count, the sorted index.

    With padding (`valid` [B, T], False = pad) each row's k comes from its own real length and padding
    scores -inf, so a padded row keeps exactly the tokens it keeps alone (not k of the padded width, and
    never a pad). Rows then keep different counts, so there is no shared index, and the largest k costs
    one host sync."""
    length = scores.shape[1]
    if valid is None:
        index = topk_index(scores, capacity_count(capacity, length))
        return mask_from_index(index, length), index
    ks = torch.tensor([capacity_count(capacity, n) for n in valid.sum(1).tolist()], device=scores.device)
    ranked = scores.masked_fill(~valid, float("-inf")).topk(int(ks.max()), dim=1).indices
    keep = torch.arange(ranked.shape[1], device=scores.device) < ks.unsqueeze(1)
    return torch.zeros_like(valid).scatter(1, ranked, keep) & valid, None


def mask_from_index(index: Tensor, length: int) -> Tensor:
    mask = torch.zeros(index.shape[0], length, dtype=torch.bool, device=index.device)
    return mask.scatter(1, index, True)


def init_weights(module: nn.Module) -> None:
    """The model's initialisation of a linear or embedding layer: N(0, 0.02) weights, zero bias."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def capacity_count(capacity: float, length: int) -> int:
    """Tokens kept per sequence at this capacity: at least one, so a block never runs on nothing."""
    return max(1, math.ceil(capacity * length))


class Router(nn.Module):
    """Base class: routes `routed_layers` of a model; dense layers never ask it.

    Must provide: `name` and `decide`. Everything else is a hook with a default here; the full list, with
    signatures and when each is called, is generated into docs/CONTRACT.md by `python -m
    sparsedepth.routing.contract` (a test fails when the two differ). A subclass defined in a module of
    this package with its own `name` is registered once `routing/__init__.py` imports its module (a test
    fails when one is missing)."""

    name: ClassVar[str] = "base"
    causal_in_training: ClassVar[bool] = True
    default_route_every: ClassVar[int] = 2
    routes_blocks: ClassVar[bool] = True
    learned: ClassVar[bool] = True
    # eval-mode decision rules it offers, default first: "causal" always (generation needs it), "topk" for
    # routers trained with a non-causal top-k, kept at inference as the upper bound
    inference_modes: ClassVar[tuple[str, ...]] = ("causal",)

    def __init__(self, cfg: ModelConfig, capacity: float, routed_layers: Sequence[int],
                 gating: str = "deterministic", temperature: float = 1.0, curriculum: float = 0.0):
        super().__init__()
        if not (0.0 < capacity <= 1.0):
            raise ConfigError(f"capacity must be in (0, 1], got {capacity}")
        if gating not in ("deterministic", "probabilistic"):
            raise ConfigError(f"gating must be 'deterministic' or 'probabilistic', got {gating!r}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not (0.0 <= curriculum <= 1.0):
            raise ConfigError(f"curriculum (fraction of training) must be in [0, 1], got {curriculum}")
        self.cfg = cfg
        self.capacity = float(capacity)
        self.gating, self.temperature, self.curriculum = gating, float(temperature), float(curriculum)
        self.routed_layers = list(routed_layers)
        self.slot = {layer: i for i, layer in enumerate(self.routed_layers)}
        self._aux: list[Tensor] = []
        self.progress = 1.0  # a model built for inference is at the end of any schedule
        self.inference = self.inference_modes[0]
        self.readout: Callable[[Tensor], Tensor] | None = None
        self.valid: Tensor | None = None  # real tokens of a padded batch (set by `begin`)

    # modes ("training", "inference") in which its rule gives every token of a sample the same blocks by
    # design (layerdrop's fixed pruning at inference, early exit's per-sample layer dropout in training): the
    # generic tests then check uniformity instead of requiring non-uniform routing
    uniform_routing: ClassVar[tuple[str, ...]] = ()
    # how its `training_counts` relate to a training step's real counts: "exact" (top-k and fixed rules: the
    # count is the capacity), "expected" (random rules: the plan is their expectation, off by sampling only),
    # "budget" (learned or untrained gates: the plan assumes the fraction the budget loss aims at, so at
    # initialisation it is off by as much as the gate's starting fraction is; the FLOP tests allow 25 %)
    training_plan: ClassVar[str] = "budget"
    # which of the shared options (`gating`/`temperature`: sampled training gates; `curriculum`: a falling
    # capacity) its constructor takes and uses; the generic option tests run on these (a test checks that the
    # constructor accepts exactly these)
    shared_options: ClassVar[tuple[str, ...]] = ("gating", "temperature", "curriculum")

    def reset_parameters(self) -> None:
        """Initialise its weights; the model calls it after the trunk's (so the trunk's draws never depend
        on the router). Default: every `nn.Linear`/`nn.Embedding` weight N(0, 0.02), biases zero, as the
        trunk. Override (calling super first) to choose, e.g., a bias that starts at the capacity."""
        self.apply(init_weights)

    def attach(self, readout: Callable[[Tensor], Tensor]) -> None:
        """The model hands over its shared read-out (final norm + tied head: hidden state → logits) once, at
        construction, for routers that look at logits mid-network (early exit)."""
        self.readout = readout

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        """Called once per forward pass with the token embeddings, their positions ([T] or [B, T]) and, for
        a padded batch, which tokens are real (`valid` [B, T], a prefix of each row; None: all are).

        The model clears padding from every decision itself, so a causal rule (a token's fate from its own
        state) may ignore `valid`; a rule that ranks tokens against each other (top-k) must use it, so that
        padding neither takes a place nor changes k (`topk_choice`)."""
        self._aux = []
        self.positions = positions
        self.valid = valid

    def decide(self, h: Tensor, layer: int) -> Decision:
        """Which tokens run routed block `layer`, from the hidden state `h` [B, T, C] entering it."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called by the model once per forward pass after the last block, before `aux_loss`: the place for
        a term over all routed blocks (an expected depth). Not called by speculative decoding's partial
        passes (inference: losses are unused). Default: nothing."""

    def carry(self) -> dict[str, Tensor | None]:
        """Per-token state ([B, T, ...]) that this pass's later decisions depend on beside the hidden state
        (a nested router's survivors, an early exit's exit flags). Self-speculative decoding runs the first
        blocks one token at a time and the rest on all drafted tokens at once, so it hands this, concatenated
        along T, back to `restore` after `begin`. Default: none (each decision reads `h` and `begin` only)."""
        return {}

    def restore(self, state: dict[str, Tensor | None]) -> None:
        """Take back, after `begin` for the same tokens, the state `carry` gave out."""
        for name, value in state.items():
            setattr(self, name, value)

    def set_inference(self, mode: str) -> None:
        """Select the eval-mode decision rule: one of `inference_modes` (training mode ignores it)."""
        if mode not in self.inference_modes:
            raise ConfigError(f"{self.name} inference mode must be one of {list(self.inference_modes)}, "
                              f"got {mode!r}")
        self.inference = mode

    @property
    def propagates_state(self) -> bool:
        """Whether its decisions now set `propagate` (skipped tokens still give keys/values), so FLOP
        accounting charges their K/V projections and attention. Read in the mode it is in: the training
        FLOP plan asks a router in training mode, so state propagation in training is planned too."""
        return False

    def target_loss(self, targets: Tensor, logits: Tensor | None = None) -> Tensor | None:
        """Auxiliary terms that need the next-token targets or the final `logits` (early exit's per-layer
        read-out loss and its exit classifier's labels); the model adds them to `aux_loss` when it is given
        targets."""
        return None

    def calibrate(self, model: SparseDepthModel, batches: list[Tensor]) -> None:
        """Fit, on validation batches after the last training step, what training cannot (early exit's
        confidence threshold, to hit the capacity). Training calls it for every router; nothing by default."""

    def fit_capacity(self, model: SparseDepthModel, idx: Tensor) -> None:
        """Move an *untrained* router's causal rule so that, in eval mode, it keeps about `capacity` of the
        tokens of `idx`, as a trained router's budget loss would: the benchmark times random weights, and
        speed depends on how many tokens run. Called in eval mode with the causal rule; by default
        `calibrate` (top-k, random and fixed rules are at their capacity already)."""
        self.calibrate(model, [idx])

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1], set by the training loop before each step (for schedules such as
        a capacity curriculum). Derived from the step, so resuming restores it exactly."""
        self.progress = fraction

    @property
    def effective_capacity(self) -> float:
        """The capacity in force now: with a curriculum it falls linearly from 1.0 to the target over the
        first `curriculum` fraction of training (future work of the origin project), then stays at the target.
        Evaluation always uses the target, so a mid-training validation measures the final model."""
        if not self.training or self.curriculum <= 0 or self.progress >= self.curriculum:
            return self.capacity
        return 1.0 - (1.0 - self.capacity) * self.progress / self.curriculum

    def hard_gate(self, margin: Tensor) -> Tensor:
        """Run (True) or skip, from a logit-like margin where 0 is the decision boundary. Deterministic:
        margin > 0. Probabilistic gating (training only): a Bernoulli draw with probability
        sigmoid(margin / temperature), so exploration is proportional to the router's uncertainty."""
        if self.training and self.gating == "probabilistic":
            return torch.rand_like(margin) < torch.sigmoid(margin / self.temperature)
        return margin > 0

    def ranking_scores(self, logit: Tensor) -> Tensor:
        """Scores a top-k router ranks by: the logits, plus Gumbel noise × temperature under probabilistic
        gating in training (sampling k tokens without replacement, so the capacity stays exact)."""
        if self.training and self.gating == "probabilistic":
            uniform = torch.rand_like(logit).clamp(1e-9, 1 - 1e-9)
            return logit - self.temperature * torch.log(-torch.log(uniform))
        return logit

    def add_aux(self, loss: Tensor) -> None:
        """Record an auxiliary loss term of this pass (cleared by `begin`, summed by `aux_loss`)."""
        self._aux.append(loss)

    def aux_loss(self) -> Tensor | None:
        """Sum of the auxiliary terms added in this forward pass (None when the router has none)."""
        return torch.stack(self._aux).sum() if self._aux else None

    # --- FLOP accounting (flops.py asks these; 2 FLOPs per multiply-add, matmuls only) ------------------

    def weight_flops_per_token(self) -> float:
        """Its weight matmuls per token: each weight matrix entry is one multiply-add per token."""
        return 2.0 * sum(p.numel() for p in self.parameters() if p.dim() > 1)

    def flops_per_token(self) -> float:
        """Inference FLOPs per token of its decisions (weights, plus any confidence read-out it runs)."""
        return self.weight_flops_per_token()

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Mean and variance of the tokens per sample each routed block runs in a training step at the
        effective capacity, for the training-FLOP plan. Default: the fraction sits at the capacity (exact
        for top-k rules; for learned gates an assumption — their budget loss pulls them there)."""
        return {layer: (self.effective_capacity * length, 0.0) for layer in self.routed_layers}

    def training_readouts(self, steps: int | None = None) -> int:
        """Passes of the shared head over the batch, forward and backward, that its training loss makes
        (early exit's exit loss): in the last training forward (`steps` None; 0 outside training), or in
        total over the first `steps` steps of a run (the plan). Accounting charges each as 3 × the head."""
        return 0

    def training_flops_per_token(self, steps: int | None = None) -> float:
        """Its own matmul FLOPs per token in a training step, forward and backward, head read-outs excluded:
        in the last training forward (`steps` None), or averaged over the first `steps` steps of a run.
        Default 3 × its weights (the backward costs two matmuls per forward matmul)."""
        return 3.0 * self.weight_flops_per_token()
