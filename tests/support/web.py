"""Status-page test helpers: a syncd config with secrets that must never show, and ``FakeSource``, a
status source without a daemon."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from PIL import Image

from syncd.config import Config, parse_config
from syncd.ledger import Ledger
from syncd.metrics import Metrics
from syncd.statuspage import Check, Readiness

EVIL = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
SO_PASSWORD = "so-password-never-shown"
BC_SECRET = "bc-secret-never-shown"


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(out, "JPEG", quality=80)
    return out.getvalue()


def make_config(ledger: Path) -> Config:
    data = {
        "superoffice": {
            "base_url": "http://127.0.0.1:1/Cust00001/api/v1",
            "auth": {"type": "basic", "username": "syncd", "password": SO_PASSWORD},
        },
        "businesscentral": {
            "base_url": "http://127.0.0.1:1/v2.0/t/production/api/v2.0",
            "company": "CRONUS",
            "auth": {
                "type": "client_credentials",
                "tenant_id": "t",
                "client_id": "c",
                "client_secret": BC_SECRET,
            },
        },
        "ledger": str(ledger),
        "mappings": [
            {
                "name": "customers",
                "source": "contact",
                "target": "customers",
                "match": {"source": "code", "target": "number"},
            },
            {
                "name": "staff",
                "source": "person",
                "target": "employees",
                "match": {"source": "personNumber", "target": "number"},
            },
            {
                "name": "vendors",
                "source": "contact",
                "target": "vendors",
                "pairs": {"7": "V1"},
                "enabled": False,
            },
        ],
    }
    return parse_config(yaml.safe_dump(data))


@dataclass
class FakeSource:
    """A StatusSource without a daemon: a real ledger, a config, fixed readiness and schedule."""

    config: Config | None
    ledger: Ledger | None
    metrics: Metrics | None = field(default_factory=Metrics)
    checks: dict[str, Check] = field(default_factory=lambda: {"config": Check(True, "ok")})
    busy: dict[str, str] = field(default_factory=dict)

    async def readiness(self) -> Readiness:
        return Readiness(self.checks)

    def next_runs(self, mapping: str) -> Mapping[str, datetime | None]:
        return {
            "incremental": datetime(2026, 11, 27, 10, 10, tzinfo=UTC),
            "full": datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
        }

    def running(self) -> Mapping[str, str]:
        return self.busy
