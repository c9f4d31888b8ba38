"""The alert rules with Debian's promtool: they parse, and each platform alert fires on the series
that should fire it and stays silent on healthy ones (tests/prometheus/alerts_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool comes with Debian's prometheus (`make install` installs it)"
    return subprocess.run(
        [PROMTOOL, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_alert_rules_parse() -> None:
    done = _promtool("check", "rules", "infra/prometheus/alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    done = _promtool("test", "rules", "tests/prometheus/alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
