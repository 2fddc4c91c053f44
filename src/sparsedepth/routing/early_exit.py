"""Early exit: LayerSkip training (Elhoushi et al. 2024) with CALM's confidence exits (Schuster et al. 2022).

Training: every layer's output is read out by the shared head (final norm + tied LM head), and a
cross-entropy on each, weighted up with depth, teaches early layers to predict; layer dropout rising with
depth (per sample) makes later layers skippable. Inference: a token exits after the first layer whose
confidence exceeds a threshold (calibrated on the validation split to the target capacity) and skips every
later layer. CALM's three confidence measures (`confidence`), by cost per token per checked layer:
  softmax     top-1 minus top-2 probability of the shared head's read-out: 2·d·V (over a block when V ≫ d)
  saturation  cosine of the token's state with its state at the previous check: 6·d (three dot products)
  classifier  a linear exit classifier on the state, sigmoid(w·h + b): 2·d. Trained on the side (stop-
              gradient: the trunk never sees its loss) with CALM's consistency label "the read-out's top-1
              at this layer already equals the final layer's", computed per token, so causally.
State propagation: an exited token's frozen hidden state still provides keys/values in the layers it skipped,
so later tokens attend to it as in the dense model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from .base import Decision, Router

# the range a confidence lives in, which the threshold calibration bisects
CONFIDENCE_RANGE = {"softmax": (0.0, 1.0), "saturation": (-1.0, 1.0), "classifier": (0.0, 1.0)}


@dataclass
class PropagatingDecision(Decision):
    """A decision whose skipped tokens still serve as keys/values (their current hidden state)."""

    propagate: bool = True


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-token dot product [..., d] · [..., d] → [...] as a batched matmul, so torch's FLOP counter
    sees its 2·d FLOPs per token (an elementwise product and sum would be invisible to it)."""
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).flatten(-3)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity per token, in float32: three dot products, 6·d FLOPs per token."""
    a, b = a.float(), b.float()
    return dot(a, b) * (dot(a, a) * dot(b, b)).clamp_min(1e-24).rsqrt()


def consistent(early_logits: Tensor, final_logits: Tensor) -> Tensor:
    """CALM's oracle exit label per token: the early read-out already predicts what the final layer does."""
    return early_logits.argmax(-1) == final_logits.argmax(-1)


class EarlyExitRouter(Router):
    name = "early_exit"
    shared_options = ()
    training_plan = "expected"
    default_route_every = 1
    learned = False  # by default no router weights: the threshold is calibrated, the exit loss trains
    uniform_routing = ("training",)  # layer dropout drops a block for a whole sample

    def __init__(self, cfg, capacity, routed_layers, threshold: float = 0.9, max_layer_dropout: float = 0.2,
                 exit_loss_weight: float = 1.0, rotation: int = 1, confidence: str = "softmax",
                 classifier_weight: float = 1.0, read_layers: Sequence[int] = ()):
        super().__init__(cfg, capacity, routed_layers)
        if rotation < 1:
            raise ConfigError(f"early_exit rotation must be ≥ 1, got {rotation}")
        if confidence not in CONFIDENCE_RANGE:
            raise ConfigError(f"early_exit confidence must be one of {list(CONFIDENCE_RANGE)}, "
                              f"got {confidence!r}")
        self.confidence = confidence
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        # LayerSkip's rotational curriculum: each step, the exit loss reads out one layer in `rotation`
        # (a different one each step), which divides the cost of the per-layer head by `rotation`
        self.rotation = rotation
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # saved, so resume is exact
        self.max_layer_dropout = max_layer_dropout
        self.exit_loss_weight = exit_loss_weight
        self.classifier_weight = classifier_weight
        self.checked = [layer for layer in self.routed_layers if layer > 0]  # layers an exit is decided at
        self.check_slot = {layer: i for i, layer in enumerate(self.checked)}
        # the layers training reads out (exit loss, classifier labels): every checked one by default; a
        # self-speculative draft's exit alone trains just the layer the draft reads out
        unknown = sorted(set(read_layers) - set(self.checked))
        if unknown:
            raise ConfigError(f"early_exit read_layers {unknown}: not among the layers an exit is checked at "
                              f"({self.checked})")
        self.read = [layer for layer in self.checked if not read_layers or layer in read_layers]
        self.classifier = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in self.checked
                                        if confidence == "classifier")
        self.exited: Tensor | None = None
        self.previous: Tensor | None = None  # the state at the previous check (saturation)
        self.hidden: list[tuple[int, Tensor]] = []
        self.phase = 0  # rotation phase of the current training step

    @property
    def propagates_state(self) -> bool:
        return not self.training

    @property
    def exits(self) -> bool:
        """Whether inference exits at all: at capacity 1 every token runs every block, so no confidence is
        scored (LayerSkip training for self-speculation alone, whose full model must be the whole model)."""
        return self.capacity < 1.0

    @property
    def reads_out(self) -> bool:
        """Whether training reads out intermediate layers at all (for the exit loss or the labels)."""
        return self.exit_loss_weight > 0 or self.confidence == "classifier"

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        super().begin(h0, positions, valid)
        self.exited = torch.zeros(h0.shape[:2], dtype=torch.bool, device=h0.device)
        self.previous = h0
        self.hidden = []
        if self.training:
            self.steps += 1
            self.phase = int(self.steps)  # read once per forward pass, not once per layer (a host sync)

    def carry(self) -> dict[str, Tensor | None]:
        """Which tokens have exited, and the state at the previous check (saturation)."""
        return {"exited": self.exited, "previous": self.previous}

    def score(self, h: Tensor, layer: int) -> Tensor:
        """The confidence [B, T] that the state `h` entering `layer` is final enough to exit on."""
        if self.confidence == "saturation":
            return cosine(h, self.previous)
        if self.confidence == "classifier":
            return torch.sigmoid(self.classifier[self.check_slot[layer]](h).squeeze(-1).float())
        top2 = self.readout(h).float().softmax(-1).topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]

    def decide(self, h: Tensor, layer: int) -> Decision:
        B, T = h.shape[:2]
        ones = torch.ones(B, T, dtype=h.dtype, device=h.device)
        if self.training:
            if layer in self.read and self.reads_out and (layer + self.phase) % self.rotation == 0:
                self.hidden.append((layer, h))
            drop = self.max_layer_dropout * layer / max(1, self.cfg.n_layers - 1)
            keep = (torch.rand(B, 1, device=h.device) >= drop).expand(B, T)
            return Decision(mask=keep, gate=ones)
        if layer > 0 and self.exits:
            self.exited = self.exited | (self.score(h, layer) > self.threshold)
        self.previous = h
        # no exits (capacity 1: LayerSkip training for self-speculation alone): every token runs every block
        return PropagatingDecision(mask=~self.exited, gate=ones, whole=not self.exits)

    def target_loss(self, targets: Tensor, logits: Tensor | None = None) -> Tensor | None:
        """LayerSkip's early-exit loss: the shared head's cross-entropy at each intermediate layer,
        weighted in proportion to depth (normalised to sum to one). With the classifier, plus its BCE
        (mean over the read-out layers) on stop-gradient states against the consistency label, which
        reuses the exit loss's read-out (one head pass per layer serves both)."""
        if not self.hidden:
            return None
        classify = self.confidence == "classifier"
        if classify and logits is None:
            raise ValueError("the exit classifier's labels need the final logits")
        total = sum(layer for layer, _ in self.hidden)
        losses, bce = [], []
        for layer, h in self.hidden:
            if self.exit_loss_weight > 0:
                early = self.readout(h)
                losses.append(layer / total * F.cross_entropy(early.flatten(0, 1).float(), targets.flatten()))
            else:
                with torch.no_grad():
                    early = self.readout(h)
            if classify:
                labels = consistent(early.detach(), logits.detach()).float()
                logit = self.classifier[self.check_slot[layer]](h.detach()).squeeze(-1).float()
                bce.append(F.binary_cross_entropy_with_logits(logit, labels))
        terms = []
        if losses:
            terms.append(self.exit_loss_weight * torch.stack(losses).sum())
        if bce:
            terms.append(self.classifier_weight * torch.stack(bce).mean())
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    # --- FLOP accounting -------------------------------------------------------------------------------

    def confidence_flops_per_token(self) -> float:
        """What one checked layer's confidence costs per token beyond the router's weights (the classifier's
        2·d are its weights): the softmax read-out 2·d·V, saturation's three dot products 6·d."""
        d = self.cfg.d_model
        return {"softmax": 2.0 * d * self.cfg.vocab_size, "saturation": 6.0 * d, "classifier": 0.0}[
            self.confidence]

    def flops_per_token(self) -> float:
        """Inference: every checked layer scores every token (exited ones too: no gather for the score)."""
        checks = len(self.checked) if self.exits else 0
        return self.weight_flops_per_token() + checks * self.confidence_flops_per_token()

    def _reads(self, steps: int | None) -> int:
        """Layer read-outs training makes: in the last forward, or over the first `steps` steps of a run
        (step s has phase s + 1: layer l is read out when (l + phase) % rotation == 0)."""
        if not self.reads_out:
            return 0
        if steps is None:
            return len(self.hidden) if self.training else 0
        r = self.rotation
        return sum((steps + layer) // r - layer // r for layer in self.read)

    def training_readouts(self, steps: int | None = None) -> int:
        return self._reads(steps) if self.exit_loss_weight > 0 else 0

    def training_flops_per_token(self, steps: int | None = None) -> float:
        """The classifier, per read-out layer: forward 2·d and its weight gradient 2·d (its input is
        detached, so no input gradient); without an exit loss, also the labels' no-grad read-out 2·d·V."""
        if self.confidence != "classifier":
            return 0.0
        d = self.cfg.d_model
        per_read = 4.0 * d + (0.0 if self.exit_loss_weight > 0 else 2.0 * d * self.cfg.vocab_size)
        return self._reads(steps) * per_read / (steps or 1)

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Per-sample layer dropout: a sample runs a block with the whole sequence or not at all."""
        last = max(1, self.cfg.n_layers - 1)
        keep = {layer: 1.0 - self.max_layer_dropout * layer / last for layer in self.routed_layers}
        return {layer: (q * length, length * length * q * (1 - q)) for layer, q in keep.items()}

    @torch.no_grad()
    def calibrate(self, model, batches: list[Tensor], iterations: int = 20) -> float:
        """Bisect the threshold over the measure's range so the mean fraction of routed layers run matches
        the capacity on the given (validation) batches. More confidence required → later exits → more
        layers run."""
        if not self.exits:  # nothing to calibrate: no token exits
            return float(self.threshold)
        was_training = model.training
        model.eval()
        routed = torch.tensor(self.routed_layers)

        def fraction(threshold: float) -> float:
            self.threshold.fill_(threshold)
            ran = [model(x).routing[..., routed].float().mean() for x in batches]
            return torch.stack(ran).mean().item()

        low, high = CONFIDENCE_RANGE[self.confidence]
        for _ in range(iterations):
            mid = (low + high) / 2
            if fraction(mid) < self.capacity:
                low = mid
            else:
                high = mid
        self.threshold.fill_(high)
        model.train(was_training)
        return high
