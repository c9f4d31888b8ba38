"""The catalog's lifecycle at the door: which model answers a name, and what its state means.

- an alias is answered by its target (the response's ``model`` names the target);
- a retired model is refused with 410 naming its successor, unless an administrator reactivated
  it for the caller's tenant;
- a deprecated model (or a reactivated retired one) is served, and the answer carries
  ``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594) and a ``Link`` to the successor; the body and
  the stream are unchanged, so no client breaks.
A model the catalog does not list is served as it is, without a lifecycle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from email.utils import format_datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from llmaas import catalog
from llmaas.catalog import Catalog, Model, State
from llmaas.errors import Gone
from llmaas.tenants import Tenant


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def headers(model: Model) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    since = model.deprecated_from
    if since is not None:
        out.append((b"deprecation", f"@{int(_midnight(since).timestamp())}".encode()))
    if model.sunset is not None:
        out.append((b"sunset", format_datetime(_midnight(model.sunset), usegmt=True).encode()))
    if model.successor:
        out.append((b"link", f'</v1/models/{model.successor}>; rel="successor-version"'.encode()))
    return out


def withheld(model: Model, state: State, tenant: Tenant) -> bool:
    """A retired model is refused (and not listed) unless it was reactivated for ``tenant``."""
    return state == "retired" and model.name not in tenant.reactivated


def answering(models: Catalog, requested: str, tenant: Tenant) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The model that answers ``requested`` for ``tenant``, and the headers its answer carries.

    Raises Gone for a retired model the tenant has not had reactivated."""
    name = models.resolve(requested)
    model = models.get(name)
    if model is None:
        return name, []
    state = model.state(catalog.today())
    if withheld(model, state, tenant):
        successor = f"; use '{model.successor}' instead" if model.successor else ""
        raise Gone(
            f"The model '{name}' was retired on {model.sunset}{successor}.",
            param="model",
            code="model_retired",
        )
    return name, headers(model) if state in ("deprecated", "retired") else []


class CatalogCollector:
    """Prometheus, at each scrape: ``llmaas_model_state{model,state}`` (1 for the model's state today,
    0 for the others) and ``llmaas_model_days_to_dsp{model}`` (negative once past), so that an alert
    can fire 90 days before a model's end of support (``infra/prometheus/alerts.yml``)."""

    def __init__(self, models: Catalog) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        day = catalog.today()
        states = GaugeMetricFamily(
            "llmaas_model_state",
            "Lifecycle state of each catalog model (1: current)",
            labels=["model", "state"],
        )
        days = GaugeMetricFamily(
            "llmaas_model_days_to_dsp", "Days until the model's end of support (DSP)", labels=["model"]
        )
        for model in self.models.models.values():
            current = model.state(day)
            for state in catalog.STATES:
                states.add_metric([model.name, state], 1.0 if state == current else 0.0)
            to_dsp = model.days_to_dsp(day)
            if to_dsp is not None:
                days.add_metric([model.name], float(to_dsp))
        yield states
        yield days
