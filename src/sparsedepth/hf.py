"""Hugging Face wrapper: `save_pretrained`, `AutoModelForCausalLM.from_pretrained` and `generate`.

Why a wrapper and not a port: the inner module stays our `SparseDepthModel` (state-dict keys `model.*`), so
an exported model computes exactly what the trained run computes. The HF `cache` is our routed per-layer
`KVCache` (a token is a key only in the blocks it ran), so cached `generate` equals the full forward pass.
Padded batches (`attention_mask`; left padding to generate, either side to score) compute each row as if
alone: padding runs no block and is never cached (see `SparseDepthModel.forward`).

This file down to the "end of the exported modeling code" line is also the exported `modeling_sparsedepth.py`
(`hf_export.export_code` copies it and the package files it imports), so it imports only the model's own
modules, torch and transformers. Exporting a run (`hf_export`) is not part of it:

    python -m sparsedepth.hf export --run results/runs/.../seed0 --out exported/
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TRANSFORMERS_TESTED = ">=5.24,<6"  # the range pyproject's `hf` extra declares (tested: 5.24)
try:
    import transformers
except ImportError as e:  # only the `hf` extra installs transformers
    raise ImportError(f"the SparseDepth Hugging Face wrapper needs transformers{TRANSFORMERS_TESTED}: "
                      "pip install 'sparsedepth[hf]'") from e
if int(transformers.__version__.split(".")[0]) < 5:
    raise ImportError(f"the SparseDepth Hugging Face wrapper needs transformers{TRANSFORMERS_TESTED}, found "
                      f"{transformers.__version__}: pip install 'sparsedepth[hf]'")

from transformers import (  # noqa: E402 (after the version check)
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402

from .cache import KVCache  # noqa: E402
from .config import ConfigError, ModelConfig, from_dict, to_dict  # noqa: E402
from .model import Block, Rotary, SparseDepthModel, build_model  # noqa: E402
from .routing import ROUTERS, Router  # noqa: E402
from .speculative import speculative_generate  # noqa: E402

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
    """Our routed `KVCache` in the shape `generate` passes around; `seen` = tokens fed so far, padding
    included (each row's position counts its real tokens: `kv.positions`). `kv` is made at the first forward
    pass (its batch size is known only then). `appended` [B, seen, L] records which tokens each block
    cached and `real` [B, seen] which were not padding, so `crop` can roll back exactly what assisted
    decoding rejects."""

    is_compileable = False
    is_croppable = True

    def __init__(self, kv: KVCache | None = None):
        self.kv, self.seen = kv, 0
        self.appended: Tensor | None = None
        self.real: Tensor | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    @property
    def is_linear(self) -> list[bool]:
        """Per layer: a recurrent state HF cannot slice (none here: every block is attention)."""
        return [False] * (0 if self.kv is None else len(self.kv.layers))

    def record(self, before: Tensor, routing: Tensor, real: Tensor | None = None) -> None:
        """After a forward pass of T tokens (`real` [B, T]: not padding; None: all): which of them each
        block cached. A block appends the tokens that ran it, or every real token when it propagates state
        (an early exit's skipped tokens stay keys); the cache lengths before ([B, L]) and after tell the
        two apart."""
        if real is None:
            real = torch.ones(routing.shape[:2], dtype=torch.bool, device=routing.device)
        added = self.kv.lengths() - before  # [B, L]
        ran = routing.sum(1)
        everyone = added == real.sum(1, keepdim=True)
        if not bool(((added == ran) | everyone).all()):
            raise RuntimeError("routed cache: a block cached neither the tokens that ran it nor all tokens")
        step = routing | (everyone.unsqueeze(1) & real.unsqueeze(-1))
        self.appended = step if self.appended is None else torch.cat([self.appended, step], dim=1)
        self.real = real if self.real is None else torch.cat([self.real, real], dim=1)
        self.seen += routing.shape[1]

    def activate_past_recording(self, recurrent_states_to_keep: int | None = None) -> None:
        """Assisted decoding calls this before it crops; every forward pass is recorded anyway, and there
        is no recurrent state to keep (transformers >= 5.25 passes `recurrent_states_to_keep`)."""

    def get_recurrent_states_to_keep(self, layer_idx: int | None = None) -> int:
        """No block has a recurrent state: nothing beyond the keys/values needs keeping for a crop."""
        return 0

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` tokens (negative: drop the last -`max_length`), as HF's caches do.
        Keys/values past each block's new length are left in place: attention never reads them and the
        next tokens overwrite them."""
        keep = self.seen + max_length if max_length < 0 else min(max_length, self.seen)
        if keep == self.seen:
            return
        self.appended, self.real = self.appended[:, :keep], self.real[:, :keep]
        self.kv.rollback(self.appended.sum(1), self.real.sum(1))
        self.seen = keep

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: row i continues beam `beam_idx[i]`."""
        self.kv.select(beam_idx)
        self.appended, self.real = self.appended[beam_idx], self.real[beam_idx]


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

    def resize_token_embeddings(self, new_num_tokens: int | None = None,
                                pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Grow or shrink the tied embedding/head; new rows are the mean of the old ones (deterministic)."""
        if new_num_tokens is None:
            return self.model.wte
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        old = self.model.wte.weight
        new = nn.Embedding(new_num_tokens, old.shape[1], device=old.device, dtype=old.dtype)
        kept = min(new_num_tokens, old.shape[0])
        with torch.no_grad():
            new.weight[:kept] = old[:kept]
            new.weight[kept:] = old.mean(0)
        self.model.wte = new
        self.model.lm_head = nn.Linear(old.shape[1], new_num_tokens, bias=False, device=old.device,
                                       dtype=old.dtype)
        self.model.lm_head.weight = new.weight  # still tied
        self.model.cfg.vocab_size = self.config.vocab_size = new_num_tokens
        return new

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        """Refuse up front what would fail at token `max_seq_len` (and lose the output), and outputs that
        would silently come back as None (`generate` validates its final config here, every mode)."""
        super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)
        for name in ("output_hidden_states", "output_attentions"):
            if getattr(generation_config, name, False):
                raise NotImplementedError(f"{name} is not provided by SparseDepth's generate (see forward)")
        if generation_config.max_length > self.config.max_seq_len:
            raise ValueError(
                f"prompt ({input_ids_length} tokens) + new tokens = {generation_config.max_length} exceeds "
                f"max_seq_len {self.config.max_seq_len}: lower max_new_tokens (at most "
                f"{self.config.max_seq_len - input_ids_length}) or shorten the prompt")

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size,
                                      max_cache_length):
        """Assisted and prompt-lookup decoding need the cache before the first forward pass (to crop it)."""
        if generation_mode == "assisted_generation" and model_kwargs.get("cache") is None:
            if not self.decodes_causally:
                raise ValueError("assisted decoding needs a cache, and MoD's top-k inference mode is not "
                                 "causal, so it cannot decode with one")
            if generation_config.use_cache is False:
                raise ValueError("assisted decoding needs the routed cache: do not pass use_cache=False")
            model_kwargs["cache"] = RoutedCache()
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, generation_mode,
                                                     batch_size, max_cache_length)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, cache: RoutedCache | None = None, use_cache: bool | None = None,
                past_key_values: RoutedCache | None = None, inputs_embeds: Tensor | None = None,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                logits_to_keep: int = 0, **kwargs) -> SparseDepthOutput:
        """Logits for `input_ids` (continuing `cache` when given). `labels` are the inputs, HF-style: they
        are shifted here, -100 is ignored. `past_key_values` is the pre-5.x name of `cache`. `logits_to_keep`
        > 0: logits of the last that many positions only (`generate` asks for 1 at prefill).
        `attention_mask` (1 = real): padding anywhere runs no block and is never cached, so each row gets
        what it gets alone; `generate` hands the whole history's mask: the new tokens' part counts."""
        if inputs_embeds is not None or input_ids is None:
            raise NotImplementedError("SparseDepth takes input_ids only: routers such as probe score the "
                                      "token embedding itself, so an inputs_embeds path is not provided")
        if output_hidden_states or self.config.output_hidden_states:
            raise NotImplementedError("output_hidden_states is not provided: routed blocks update only the "
                                      "tokens they run; use the output's layers_per_token for routing")
        if output_attentions or self.config.output_attentions:
            raise NotImplementedError("output_attentions is not provided (attention runs through fused SDPA "
                                      "over each block's kept tokens only)")
        cache = cache if cache is not None else past_key_values
        if attention_mask is not None:  # generate passes the whole history's mask: these tokens' part
            attention_mask = attention_mask[:, -input_ids.shape[1]:]
            if bool(attention_mask.all()):
                attention_mask = None  # no padding: the unpadded path (top-k keeps its shared index)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is not None and not self.decodes_causally:
            raise ValueError("MoD's top-k inference mode is not causal, so it cannot decode with a cache")
        if cache is None and use_cache and self.decodes_causally and not self.training:
            cache = RoutedCache()
        if cache is not None and cache.kv is None:
            cache.kv = KVCache.empty(self.model, input_ids.shape[0])
        before = None if cache is None else cache.kv.lengths()
        targets = None if labels is None else F.pad(labels[:, 1:], (0, 1), value=-100)
        out = self.model(input_ids, targets, cache=None if cache is None else cache.kv,
                         logits_to_keep=logits_to_keep if targets is None else 0,
                         attention_mask=attention_mask)
        if cache is not None:
            cache.record(before, out.routing, None if attention_mask is None else attention_mask.bool())
        loss = out.loss
        if loss is not None and out.aux_loss is not None:
            loss = loss + out.aux_loss
        logits = out.logits[:, -logits_to_keep:] if logits_to_keep and targets is not None else out.logits
        return SparseDepthOutput(loss=loss, logits=logits, cache=cache,
                                 layers_per_token=out.layers_per_token, aux_loss=out.aux_loss)

    def generate(self, inputs: Tensor | None = None, generation_config=None, speculative: dict | None = None,
                 **kwargs):
        """HF's `generate`; with `speculative={"exit_layer": E, "draft_tokens": k}`, greedy self-speculative
        decoding on our routed cache instead (`sparsedepth.speculative`: the first E blocks draft k tokens a
        round, the rest verify them in one pass), equal to greedy `generate` token for token. That path
        takes `input_ids` (left padding via `attention_mask`), `max_new_tokens` (else the config's
        `max_length`), `eos_token_id`, `pad_token_id` (fills rows that stopped early); it refuses the rest."""
        if speculative is None:
            return super().generate(inputs, generation_config, **kwargs)
        config = generation_config or self.generation_config
        ids = inputs if inputs is not None else kwargs.pop("input_ids")
        mask = kwargs.pop("attention_mask", None)
        if kwargs.pop("do_sample", config.do_sample):
            raise ValueError("speculative generate decodes greedily: pass do_sample=False")
        new = kwargs.pop("max_new_tokens", config.max_new_tokens)
        new = new if new is not None or config.max_length is None else config.max_length - ids.shape[1]
        eos = kwargs.pop("eos_token_id", config.eos_token_id)
        eos = eos[0] if isinstance(eos, list) and len(eos) == 1 else eos
        pad = kwargs.pop("pad_token_id", config.pad_token_id)
        kwargs.pop("use_cache", None)  # it always decodes with the cache
        if new is None:
            raise ValueError("speculative generate needs max_new_tokens (or a max_length)")
        if kwargs or isinstance(eos, list):
            raise ValueError(f"speculative generate does not take {sorted(kwargs) or 'several eos ids'}")
        rows = ids.tolist() if mask is None else [r[m > 0].tolist() for r, m in zip(ids, mask, strict=True)]
        out, _ = speculative_generate(self.model, rows, new, **speculative, eos_id=eos)
        width = max(len(t) for t in out.tokens)
        fill = pad if pad is not None else eos if eos is not None else 0
        tail = [t + [fill] * (width - len(t)) for t in out.tokens]
        tail = torch.tensor(tail, dtype=ids.dtype, device=ids.device).view(len(tail), width)
        return torch.cat([ids, tail], 1)

    def prepare_inputs_for_generation(self, input_ids: Tensor, cache: RoutedCache | None = None,
                                      attention_mask: Tensor | None = None, use_cache: bool | None = None,
                                      **kwargs) -> dict:
        """With our cache, feed only the tokens it has not seen; without one, the whole sequence (exact:
        every router decides causally at inference, except MoD top-k, which then recomputes by design)."""
        cache = cache if cache is not None else kwargs.get("past_key_values")
        if kwargs.get("inputs_embeds") is not None:
            raise NotImplementedError("SparseDepth generates from input_ids only (no inputs_embeds path)")
        if cache is not None:
            input_ids = input_ids[:, cache.seen:]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache,
                  "use_cache": use_cache}
        if kwargs.get("logits_to_keep") is not None:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs


# --- end of the exported modeling code: below, registration and the export entry points -----------------

AutoConfig.register("sparsedepth", SparseDepthConfig, exist_ok=True)
AutoModelForCausalLM.register(SparseDepthConfig, SparseDepthForCausalLM, exist_ok=True)

_EXPORT_SIDE = ("from_run", "hf_tokenizer", "export_run", "export_code", "model_card", "main")


def __getattr__(name: str):
    """`from_run`, `export_run`, ... live in `hf_export` (they read run directories and data)."""
    if name in _EXPORT_SIDE:
        from . import hf_export

        return getattr(hf_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from sparsedepth.hf_export import main as _main  # the importable module's classes, not __main__'s copies

    sys.exit(_main())
