"""Cut OpenAI's OpenAPI document down to the operations this platform serves, with every schema
they reference (transitively), for the contract test (tests/contract/test_openapi.py).

    python -m tests.contract.subset path/to/openai/openapi.yaml > tests/contract/openai-subset.yaml

The full document (3 MB, MIT licensed, see LICENSE-openai beside the subset) came from the
project's shared data (``shared/data/openai-openapi/``); the subset keeps its text unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

OPERATIONS = {
    "/chat/completions": ["post"],
    "/completions": ["post"],
    "/embeddings": ["post"],
    "/models": ["get"],
    "/models/{model}": ["get"],
    "/files": ["get", "post"],
    "/files/{file_id}": ["get", "delete"],
    "/files/{file_id}/content": ["get"],
    "/batches": ["get", "post"],
    "/batches/{batch_id}": ["get"],
    "/batches/{batch_id}/cancel": ["post"],
}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node)) if node else set()
    return set()


def subset(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {p: {m: spec["paths"][p][m] for m in methods} for p, methods in OPERATIONS.items()}
    for p in OPERATIONS:
        if "parameters" in spec["paths"][p]:
            paths[p]["parameters"] = spec["paths"][p]["parameters"]
    wanted, seen = refs(paths), set()
    components: dict[str, dict[str, Any]] = {}
    while wanted - seen:
        ref = (wanted - seen).pop()
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        wanted |= refs(node)
    if "securitySchemes" in spec.get("components", {}):
        components["securitySchemes"] = spec["components"]["securitySchemes"]
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "security": spec.get("security", []),
        "paths": paths,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as source:
        document = yaml.safe_load(source)
    yaml.safe_dump(subset(document), sys.stdout, sort_keys=False, allow_unicode=True, width=110)
