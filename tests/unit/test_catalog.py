"""The model catalog: the shipped file loads, states change on the boundary days, mistakes name
their line, and ``llmaas models`` shows the states of a given day."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from llmaas import catalog
from llmaas.catalog import CatalogError, Model

D = dt.date


def model(**fields: object) -> Model:
    base: dict[str, object] = {
        "name": "m", "publisher": "p", "kind": "chat", "context_length": 8192,
        "dmp": D(2025, 6, 13), "dsp": D(2025, 11, 30), "energy_kwh_per_mtok": 1.0,
        "energy_basis": "measured",
    }  # fmt: skip
    return Model(**{**base, **fields})  # type: ignore[arg-type]


def test_states_change_on_the_boundary_days() -> None:
    m = model()
    assert m.sunset == D(2026, 2, 28)  # 30 Nov + 3 months, clamped to February's end
    assert [m.state(day) for day in (D(2025, 6, 12), D(2025, 6, 13), D(2025, 11, 29))] == [
        "experimental",
        "production",
        "production",
    ]
    assert [m.state(day) for day in (D(2025, 11, 30), D(2026, 2, 27), D(2026, 2, 28))] == [
        "deprecated",
        "deprecated",
        "retired",
    ]
    assert m.days_to_dsp(D(2025, 9, 1)) == 90


def test_retired_on_and_experimental_override_the_dates() -> None:
    early = model(retired_on=D(2025, 10, 17))
    assert early.state(D(2025, 10, 16)) == "production"
    assert early.state(D(2025, 10, 17)) == "retired"
    assert model(experimental=True).state(D(2025, 8, 1)) == "experimental"
    assert model(experimental=True).state(D(2025, 12, 1)) == "deprecated"


def test_add_months_clamps_to_the_end_of_the_month() -> None:
    assert catalog.add_months(D(2025, 12, 31), 3) == D(2026, 3, 31)
    assert catalog.add_months(D(2026, 11, 30), 3) == D(2027, 2, 28)
    assert catalog.add_months(D(2027, 11, 30), 3) == D(2028, 2, 29)


def test_the_shipped_catalog_holds_the_seed_tables_and_the_local_models() -> None:
    shipped = catalog.load()
    assert len(shipped.models) == 48 + 15
    assert {"smollm2:135m", "all-minilm:l6-v2", "qwen3-next:80b", "deepseek-ocr"} <= set(shipped.models)
    assert shipped.resolve("smollm2") == "smollm2:135m"
    gemma = shipped.models["gemma3:12b"]  # listed twice in the seeds: the removal wins
    assert gemma.state(D(2026, 1, 1)) == "retired" and gemma.successor == "gemma3:27b"
    assert shipped.models["llama3.3:70b"].energy_basis == "measured"
    assert shipped.models["qwen3:14b"].energy_basis == "estimated"
    assert {m.kind for m in shipped.models.values()} >= {
        "chat",
        "reasoning",
        "vision",
        "embedding",
        "guard",
        "ocr",
    }


GOOD = """
[[model]]
name = "a"
publisher = "p"
kind = "chat"
context_length = 4096
dmp = 2025-01-01
dsp = 2026-01-01
energy_kwh_per_mtok = 0.5
energy_basis = "estimated"
"""


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('colour = "red"\n', r"models.toml:2: \[\[model\]\] a: unknown field\(s\) colour"),
        ('successor = "zz"\n', r"models.toml:2: \[\[model\]\] a: successor 'zz' is not another model"),
        (
            'retired_on = "2025-13-01"\n',
            r"models.toml:2: .*retired_on must be a date written like 2026-03-01",
        ),
        ('[[model]]\nname = "b"\n', r"models.toml:11: \[\[model\]\] b: missing field\(s\) publisher"),
        ('[[alias]]\nname = "x"\ntarget = "nowhere"\n', r"models.toml:11: \[\[alias\]\] x: target 'nowhere'"),
        (
            '[[retired]]\nname = "a"\npublisher = "p"\nretired_on = 2025-02-01\n',
            r"models.toml:11: .*'a' is listed twice",
        ),
        ("dmp = 2025-01-01\n", r"models.toml: .*line 11"),
    ],
)
def test_mistakes_name_the_line(tmp_path: Path, extra: str, error: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(GOOD + extra)
    with pytest.raises(CatalogError, match=error):
        catalog.load(path)


def test_dsp_must_follow_dmp(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(GOOD.replace("dsp = 2026-01-01", "dsp = 2024-01-01"))
    with pytest.raises(CatalogError, match="dsp 2024-01-01 is not after dmp 2025-01-01"):
        catalog.load(path)


def test_llmaas_models_prints_the_states_of_a_given_day() -> None:
    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "llmaas", "models", *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    rows = {line.split()[0]: line for line in run("--at", "2026-03-01").splitlines()[1:] if line.strip()}
    assert " production " in rows["gemma3:27b"] and "! DSP in 29 days" in rows["gemma3:27b"]
    assert " deprecated " in rows["qwen3:14b"] and "removed on 2026-03-31" in rows["qwen3:14b"]
    assert " retired " in rows["cogito:14b"] and "-> cogito:32b" in rows["cogito:14b"]
    later = {line.split()[0]: line for line in run("--at", "2026-07-01").splitlines()[1:] if line.strip()}
    assert " retired " in later["gemma3:27b"]
    bad = subprocess.run(
        [sys.executable, "-m", "llmaas", "models", "--at", "soon"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "not a date like 2026-03-01" in bad.stderr
