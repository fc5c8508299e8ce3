"""docs/serve.md stays true to the code: every setting, error code and stats field is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ditto_research.serve.config import ServeSettings
from ditto_research.serve.options import RULES
from ditto_research.serve.protocol import ERROR_CODES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "serve.md").read_text()


def test_every_setting_is_in_the_settings_table():
    missing = [f.name for f in dataclasses.fields(ServeSettings) if f"| `serve.{f.name}` |" not in DOC]
    assert missing == []


def test_every_error_code_and_stats_field_is_documented():
    assert [code for code in ERROR_CODES if f"| `{code}` |" not in DOC] == []
    for field in ("skipped_s", "pipeline_ms", "lag_p95_ms", "dropped"):
        assert f'"{field}"' in DOC


def test_every_per_session_key_is_in_the_security_table():
    documented = DOC[DOC.index("### What a client can and cannot make it do") :]
    missing = [
        key
        for key in RULES
        if not key.startswith("control.overall_ctrl_info.") and key.rpartition(".")[2] not in documented
    ]
    assert missing == []
