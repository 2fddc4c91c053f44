"""Typed, strict configs: one dataclass is the single source of truth for defaults, CLI flags and JSON schema.

Why derive the schema: a hand-written schema drifts from the dataclass; deriving it keeps "unknown key is an
error" and range checks (from field metadata) in one place, and `jsonschema` gives precise messages.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema


class ConfigError(ValueError):
    """An invalid configuration: the message names the offending key."""


def _range(minimum: float | None = None, maximum: float | None = None, exclusive_min: bool = False, **extra):
    meta: dict[str, Any] = dict(extra)
    if minimum is not None:
        meta["exclusiveMinimum" if exclusive_min else "minimum"] = minimum
    if maximum is not None:
        meta["maximum"] = maximum
    return meta


def positive_int(default: int, help: str, **extra) -> Any:
    return field(default=default, metadata=_range(1, help=help, **extra))


@dataclass
class ModelShape:
    """Shape of the decoder-only transformer, all but its vocabulary (routing is chosen at `build_model`).

    A training config holds a shape, not a `ModelConfig`: the vocabulary size is the data's (the BPE's
    `TrainConfig.vocab_size`), so a run states it once.
    """

    d_model: int = positive_int(128, "width of the residual stream")
    n_layers: int = positive_int(6, "number of transformer blocks")
    n_heads: int = positive_int(4, "attention heads (d_model / n_heads must be even, for RoPE)")
    max_seq_len: int = positive_int(256, "longest sequence the model accepts")
    mlp_ratio: int = positive_int(4, "MLP hidden width as a multiple of d_model")
    rope_base: float = field(default=10000.0, metadata=_range(1.0, help="rotary embedding base"))
    dropout: float = field(default=0.0, metadata=_range(0.0, 0.9, help="dropout probability in training"))

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError("head dimension d_model/n_heads must be even for rotary embeddings")


@dataclass
class ModelConfig(ModelShape):
    """A model's shape and its vocabulary size: everything `build_model` needs."""

    vocab_size: int = positive_int(4096, "token ids the embedding and head cover")


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _json_type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [_json_type(a) for a in typing.get_args(annotation)]
        return {"anyOf": options}
    if annotation is type(None):
        return {"type": "null"}
    if annotation is dict or origin is dict:
        return {"type": "object"}
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        return {"type": "array", "items": _json_type(item)}
    if annotation is float:
        return {"type": "number"}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    if dataclasses.is_dataclass(annotation):
        return json_schema(annotation)
    raise TypeError(f"no JSON type for {annotation!r}")


def json_schema(cls: type) -> dict[str, Any]:
    """JSON schema of a config dataclass: types, ranges/enums from field metadata, no unknown keys."""
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        prop = _json_type(hints[f.name])
        prop.update({k: v for k, v in f.metadata.items() if k != "help"})
        if "help" in f.metadata:
            prop["description"] = f.metadata["help"]
        props[f.name] = prop
    return {"type": "object", "properties": props, "additionalProperties": False}


def _types(annotation: Any) -> set[Any]:
    return set(typing.get_args(annotation)) or {annotation}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _validator(cls: type) -> jsonschema.protocols.Validator:
    """One checked validator per config class (`jsonschema.validate` re-checks the schema on every call,
    which made resolving the paper grid's 320 runs take minutes)."""
    schema = json_schema(cls)
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


def from_dict(cls: type, data: dict[str, Any], where: str = "config"):
    """Validate `data` against the dataclass schema and build it; errors name the key path."""
    e = jsonschema.exceptions.best_match(_validator(cls).iter_errors(data))
    if e is not None:
        path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"invalid {where}: {path}: {e.message}") from None
    hints = _hints(cls)
    for key, value in data.items():  # JSON schema calls 100.0 an integer; a config must say 100
        if isinstance(value, float) and int in _types(hints[key]) and float not in _types(hints[key]):
            raise ConfigError(f"invalid {where}: {key}: {value!r} is not an integer")
    kwargs = {}
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            value = from_dict(hints[key], value, f"{where}.{key}")
        elif hints[key] is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (YAML only if the suffix says so); any problem is a
    one-line ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read as text ({_one_line(e)})") from None
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or _one_line(e)
            raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return data


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
