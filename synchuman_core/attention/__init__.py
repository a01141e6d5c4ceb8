"""Attention dispatch: ``attention`` (dense) and ``varlen_attention`` (packed variable length)."""

from .backends import register_optional_backends
from .dispatch import (
    AttentionBackend,
    attention,
    available_backends,
    best_backend,
    current_backend,
    fastest_backend,
    query_chunk,
    register_backend,
    set_query_chunk_size,
    use_backend,
    varlen_attention,
)

register_optional_backends()

__all__ = [
    "AttentionBackend",
    "attention",
    "available_backends",
    "best_backend",
    "current_backend",
    "fastest_backend",
    "query_chunk",
    "register_backend",
    "set_query_chunk_size",
    "use_backend",
    "varlen_attention",
]
