"""Which model answers a caller, and the most it may produce.

A key may be limited to some models; the catalog's lifecycle turns an alias into its target,
refuses a retired model (410) and marks a deprecated one (``edge.lifecycle``); a name that neither
the catalog lists nor any worker has served since the edge started does not exist (404, not 503).
A request without ``max_tokens`` gets the most an answer may be, which is also what admission
reserves against the output-token limits and the budget, so that no request produces more than it
reserved.
"""

from __future__ import annotations

import msgspec

from edge import lifecycle
from edge.keys import Principal
from llmaas import wire
from llmaas.catalog import Catalog
from llmaas.errors import NotFound, PermissionDenied
from llmaas.fleet import Fleet


class Models:
    def __init__(self, catalog: Catalog, default_max_tokens: int) -> None:
        self.catalog = catalog
        self.default_max_tokens = default_max_tokens
        self.fleet: Fleet | None = None
        """The workers this edge hears (set by the app once its pipeline is up)."""

    def answering(self, principal: Principal, model: str) -> tuple[str, list[tuple[bytes, bytes]]]:
        """The model that answers ``model`` for this caller and the lifecycle's notices (headers);
        raises PermissionDenied, NotFound or Gone."""
        name, notices = lifecycle.answering(self.catalog, model, principal.tenant)
        if not (principal.key.allows(model) or principal.key.allows(name)):
            raise PermissionDenied(
                f"The API key {principal.key.id} may not use the model '{model}' "
                f"(it may use: {', '.join(principal.key.models)}).",
                param="model",
                code="model_not_allowed",
            )
        if self.catalog.get(name) is None and self.fleet is not None and self.fleet.unheard_of(name):
            raise NotFound(
                f"The model '{model[:256]}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return name, notices

    def bounded(self, job: wire.GenerateJob) -> wire.GenerateJob:
        """``job`` with a ``max_tokens``: without one, ``reserve_for``'s cap."""
        if job.sampling.max_tokens is not None:
            return job
        cap = self.reserve_for(job.model, None)
        return msgspec.structs.replace(job, sampling=msgspec.structs.replace(job.sampling, max_tokens=cap))

    def reserve_for(self, model: str, max_tokens: int | None) -> int:
        """The output tokens a request for ``model`` may produce: its ``max_tokens``, else the
        default (or the model's context, if smaller)."""
        if max_tokens is not None:
            return max_tokens
        cap = self.default_max_tokens
        known = self.catalog.get(model)
        if known is not None and known.context_length is not None:
            cap = min(cap, known.context_length)
        return cap
