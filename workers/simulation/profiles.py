"""Performance profiles: what one engine step costs for a model on given hardware.

Derived, not fitted: weights and KV bytes from the models' published configurations, bandwidth and
FLOPs from NVIDIA's H100 SXM datasheet (3.35 TB/s HBM3, 989 TFLOPS dense BF16), at 80 % of peak
bandwidth for memory-bound reads and 50 % of peak FLOPs for compute (the utilisation serving engines
reach on H100; see bench/README.md, "Placement", for the sources), and vLLM's own defaults on an
80 GB GPU for the step budget and the sequence limit (8192 batched tokens, 1024 sequences, 90 % of
memory for the engine). A decode step of Llama 3.1 8B alone then costs ~6 ms and a 2 000-token
prompt ~70 ms, the order of what vLLM's published H100 runs show.
"""

from __future__ import annotations

from llmaas.wire import Perf

_BANDWIDTH = 3.35e12 * 0.8
"""Bytes per second one H100 reads from HBM, at the utilisation a memory-bound step reaches."""
_FLOPS = 989e12 * 0.5
"""Dense BF16 FLOPs per second one H100 computes in a large batch."""


def _kv_tokens(gpus: int, weights: float, kv_per_token: float) -> int:
    """Tokens of KV cache: 90 % of 80 GiB per GPU, less the weights and ~3 GB of activations."""
    free = gpus * (0.9 * 80 * 2**30 - 3e9) - weights
    return int(free / kv_per_token)


# Llama 3.1 8B: 8.03 B parameters (16.06 GB in BF16); 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes.
_8B_WEIGHTS, _8B_KV = 16.06e9, 32 * 8 * 128 * 2 * 2

# Llama 3.1 70B: 70.6 B parameters (141.1 GB); 80 layers x 8 KV heads x 128 x 2 x 2 bytes; tensor
# parallel over 4 GPUs: each reads a quarter of the weights and of the KV, 2 all-reduces per layer.
_70B_WEIGHTS, _70B_KV = 141.1e9, 80 * 8 * 128 * 2 * 2

PROFILES: dict[str, Perf] = {
    "llama-8b-h100": Perf(
        step_s=_8B_WEIGHTS / _BANDWIDTH,
        token_s=2 * 8.03e9 / _FLOPS,
        context_token_s=_8B_KV / _BANDWIDTH,
        token_budget=8192,
        max_seqs=1024,
        kv_tokens=_kv_tokens(1, _8B_WEIGHTS, _8B_KV),
    ),
    "llama-70b-4xh100": Perf(
        step_s=_70B_WEIGHTS / 4 / _BANDWIDTH + 160 * 10e-6,  # + ~10 us per all-reduce
        token_s=2 * 70.6e9 / (4 * _FLOPS * 0.9),  # 90 %: tensor-parallel efficiency
        context_token_s=_70B_KV / 4 / _BANDWIDTH,
        token_budget=8192,
        max_seqs=1024,
        kv_tokens=_kv_tokens(4, _70B_WEIGHTS, _70B_KV),
    ),
}
DEFAULT_PROFILE = "llama-8b-h100"
