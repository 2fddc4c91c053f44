"""Hugging Face wrapper: `save_pretrained`, `AutoModelForCausalLM.from_pretrained` and `generate`.

Why a wrapper and not a port: the inner module stays our `SparseDepthModel` (state-dict keys `model.*`), so
an exported model computes exactly what the trained run computes. The HF `cache` is our routed per-layer
`KVCache` (a token is a key only in the blocks it ran), so cached `generate` equals the full forward pass.
Padded batches are refused: use `sparsedepth.generate.generate` for prompts of different lengths.

    python -m sparsedepth.hf export --run results/runs/.../seed0 --out exported/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache import KVCache
from .checkpoint import CheckpointError
from .config import ConfigError, ModelConfig, from_dict, to_dict
from .data import DataError, TokenData
from .model import Block, Rotary, SparseDepthModel, build_model
from .routing import ROUTERS, Router

_MODEL_DEFAULTS = ModelConfig()


class SparseDepthConfig(PretrainedConfig):
    """The `ModelConfig` fields plus the routing `build_model` takes (and MoD's inference mode)."""

    model_type = "sparsedepth"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers",
                     "num_attention_heads": "n_heads", "max_position_embeddings": "max_seq_len"}

    vocab_size: int = _MODEL_DEFAULTS.vocab_size
    d_model: int = _MODEL_DEFAULTS.d_model
    n_layers: int = _MODEL_DEFAULTS.n_layers
    n_heads: int = _MODEL_DEFAULTS.n_heads
    max_seq_len: int = _MODEL_DEFAULTS.max_seq_len
    mlp_ratio: int = _MODEL_DEFAULTS.mlp_ratio
    rope_base: float = _MODEL_DEFAULTS.rope_base
    dropout: float = _MODEL_DEFAULTS.dropout
    router: str = "dense"
    capacity: float = 1.0
    route_every: int | None = None
    router_options: dict = field(default_factory=dict)
    inference: str | None = None  # routers with a non-causal training rule (mod): "causal" or "topk"
    tie_word_embeddings: bool = True  # the head is always the embedding matrix
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.model_config()  # validates the shape (ConfigError names the key)
        if self.router not in ROUTERS:
            raise ConfigError(f"unknown router {self.router!r}; known: {', '.join(sorted(ROUTERS))}")
        if not self.tie_word_embeddings:
            raise ConfigError("SparseDepth ties its head to the embedding; tie_word_embeddings must be true")

    def model_config(self) -> ModelConfig:
        names = ModelConfig.__dataclass_fields__
        return from_dict(ModelConfig, {k: getattr(self, k) for k in names}, "sparsedepth config")

    @classmethod
    def from_model(cls, model: SparseDepthModel, router: str, capacity: float, route_every: int | None,
                   router_options: dict | None = None, **kwargs) -> SparseDepthConfig:
        """The config that rebuilds `model` (its routing as given to `build_model`)."""
        inference = model.router.inference if len(model.router.inference_modes) > 1 else None
        return cls(**to_dict(model.cfg), router=router, capacity=capacity, route_every=route_every,
                   router_options=dict(router_options or {}), inference=inference, **kwargs)


class RoutedCache:
    """Our routed `KVCache` in the shape `generate` passes around; `seen` = tokens fed so far (no padding,
    so every row is at the same position)."""

    is_compileable = False
    is_croppable = False

    def __init__(self, kv: KVCache):
        self.kv, self.seen = kv, 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: row i continues beam `beam_idx[i]`."""
        for c in self.kv.layers:
            c.k, c.v, c.lengths = c.k[beam_idx], c.v[beam_idx], c.lengths[beam_idx]
        self.kv.positions = self.kv.positions[beam_idx]


@dataclass
class SparseDepthOutput(CausalLMOutputWithPast):
    """HF's causal-LM output plus what routing did: blocks each token ran, and the router's aux loss."""

    layers_per_token: Tensor | None = None
    aux_loss: Tensor | None = None


class SparseDepthForCausalLM(PreTrainedModel, GenerationMixin):
    """`SparseDepthModel` as `self.model`; loss = shifted LM cross-entropy + router aux terms (training)."""

    config_class = SparseDepthConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"model.lm_head.weight": "model.wte.weight"}

    def __init__(self, config: SparseDepthConfig):
        super().__init__(config)
        self.model = build_model(config.model_config(), config.router, config.capacity, config.route_every,
                                 **config.router_options)
        if config.inference is not None:
            self.model.router.set_inference(config.inference)  # a mode it lacks: ConfigError naming its modes
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # we bring our own cache (forward creates it)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.lm_head

    @property
    def decodes_causally(self) -> bool:
        """False for MoD's top-k inference mode: a token's routing then depends on later tokens."""
        return self.model.router.inference == "causal"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The inner model's init, for weights a checkpoint lacks; and rebuilds the non-persistent buffers
        (rotary tables, the random router's table), which `from_pretrained` leaves uninitialised."""
        std = 0.02
        if isinstance(module, nn.Linear | nn.Embedding):
            init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm) and module.weight is not None:
            init.ones_(module.weight)
        elif isinstance(module, Block):  # residual projections: scaled as in SparseDepthModel
            for p in (module.attn.out.weight, module.mlp.proj.weight):
                init.normal_(p, std=std / (2 * self.config.n_layers) ** 0.5)
        if isinstance(module, Rotary | Router) and module._non_persistent_buffers_set:
            fresh = self._fresh(module)
            for name in module._non_persistent_buffers_set:
                init.copy_(getattr(module, name), getattr(fresh, name))

    def _fresh(self, module: Rotary | Router) -> nn.Module:
        cfg = self.config.model_config()
        with torch.device("cpu"):
            if isinstance(module, Rotary):
                return Rotary(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_base)
            return type(module)(cfg, module.capacity, module.routed_layers, **self.config.router_options)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                cache: RoutedCache | None = None, use_cache: bool | None = None,
                past_key_values: RoutedCache | None = None, **kwargs) -> SparseDepthOutput:
        """Logits for `input_ids` (continuing `cache` when given). `labels` are the inputs, HF-style: they
        are shifted here, -100 is ignored. `past_key_values` is the pre-5.x name of `cache`."""
        cache = cache if cache is not None else past_key_values
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("padded batches (attention_mask with zeros) are unsupported through the HF "
                             "wrapper; use sparsedepth.generate.generate, which decodes ragged prompts")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is not None and not self.decodes_causally:
            raise ValueError("MoD's top-k inference mode is not causal, so it cannot decode with a cache")
        if cache is None and use_cache and self.decodes_causally and not self.training:
            cache = RoutedCache(KVCache.empty(self.model, input_ids.shape[0]))
        targets = None if labels is None else F.pad(labels[:, 1:], (0, 1), value=-100)
        out = self.model(input_ids, targets, cache=None if cache is None else cache.kv)
        if cache is not None:
            cache.seen += input_ids.shape[1]
        loss = out.loss
        if loss is not None and out.aux_loss is not None:
            loss = loss + out.aux_loss
        return SparseDepthOutput(loss=loss, logits=out.logits, cache=cache,
                                 layers_per_token=out.layers_per_token, aux_loss=out.aux_loss)

    def prepare_inputs_for_generation(self, input_ids: Tensor, cache: RoutedCache | None = None,
                                      attention_mask: Tensor | None = None, use_cache: bool | None = None,
                                      **kwargs) -> dict:
        """With our cache, feed only the tokens it has not seen; without one, the whole sequence (exact:
        every router decides causally at inference, except MoD top-k, which then recomputes by design)."""
        cache = cache if cache is not None else kwargs.get("past_key_values")
        if cache is not None:
            input_ids = input_ids[:, cache.seen:]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache,
                "use_cache": use_cache}


AutoConfig.register("sparsedepth", SparseDepthConfig, exist_ok=True)
AutoModelForCausalLM.register(SparseDepthConfig, SparseDepthForCausalLM, exist_ok=True)


def _load(run_dir: str | Path) -> tuple[SparseDepthForCausalLM, TokenData]:
    from .evaluate import load_run  # evaluate pulls in training code; only export needs it

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    model, cfg, data = load_run(run_dir)
    config = SparseDepthConfig.from_model(model, cfg.router, cfg.capacity, cfg.route_every,
                                          cfg.router_options, eos_token_id=data.eot_id)
    wrapper = SparseDepthForCausalLM(config)
    wrapper.model.load_state_dict(model.state_dict())
    wrapper.generation_config.eos_token_id = data.eot_id
    return wrapper.eval(), data


def from_run(run_dir: str | Path) -> SparseDepthForCausalLM:
    """The HF model of a finished training run (eval mode, trained weights)."""
    return _load(run_dir)[0]


def hf_tokenizer(tokenizer: Tokenizer, eos_id: int, max_length: int | None = None) -> PreTrainedTokenizerFast:
    """Our BPE `tokenizers.Tokenizer` as a transformers tokenizer (a copy: the original is left as is)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    extra = {} if max_length is None else {"model_max_length": max_length}
    return PreTrainedTokenizerFast(tokenizer_object=copy, eos_token=tokenizer.id_to_token(eos_id), **extra)


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a run as an HF model directory: config, safetensors weights, generation and tokenizer files."""
    model, data = _load(run_dir)
    out = Path(out_dir)
    model.save_pretrained(out)
    hf_tokenizer(data.tokenizer, data.eot_id, model.config.max_seq_len).save_pretrained(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsedepth.hf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="save a trained run as a Hugging Face model directory")
    export.add_argument("--run", required=True, help="run directory (holds config.json, model.safetensors)")
    export.add_argument("--out", required=True, help="output directory for save_pretrained")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out)
    except (CheckpointError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run} -> {out} (load with AutoModelForCausalLM.from_pretrained after "
          "`import sparsedepth.hf`)")
    return 0


if __name__ == "__main__":
    from sparsedepth.hf import main as _main  # the importable module's classes, not __main__'s copies

    sys.exit(_main())
