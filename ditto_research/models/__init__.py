"""The six Ditto networks (state-dict compatible with the official checkpoints) and ``load_network``."""

from ditto_research.models.registry import (
    NETWORK_NAMES,
    NETWORKS,
    NetworkSpec,
    describe_mismatch,
    get_spec,
    lmdm_cond_dim,
    load_network,
    read_checkpoint,
    state_dict_from_file,
)

__all__ = [
    "NETWORKS",
    "NETWORK_NAMES",
    "NetworkSpec",
    "describe_mismatch",
    "get_spec",
    "lmdm_cond_dim",
    "load_network",
    "read_checkpoint",
    "state_dict_from_file",
]
