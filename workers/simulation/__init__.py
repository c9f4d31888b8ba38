"""A vLLM-like engine that costs no GPU: a performance model, run in virtual or in real time."""
