import pytest
import torch

from sparsedepth import ROUTERS, ModelConfig, build_model

ROUTED = [name for name in ROUTERS if name != "dense"]


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(vocab_size=97, d_model=32, n_layers=4, n_heads=4, max_seq_len=64)


def make(router: str, cfg: ModelConfig, capacity: float = 0.5, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(cfg, router=router, capacity=1.0 if router == "dense" else capacity, **options)


def tokens(cfg: ModelConfig, batch: int = 3, length: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
