"""The local webhook certificate is reused while valid and renewed before it expires."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from moe_operator.webhook_certs import RENEW_BEFORE, ensure_self_signed, expires


def test_reused_while_valid_renewed_near_expiry(tmp_path: Path) -> None:
    ca, crt, _ = ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    first = crt.read_bytes()
    until = expires(crt)
    assert until is not None and until - dt.datetime.now(dt.UTC) > dt.timedelta(days=360)
    ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    assert crt.read_bytes() == first  # reused
    # 340 days later less than RENEW_BEFORE is left: a new one, valid a year from then
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=365) - RENEW_BEFORE + dt.timedelta(days=1)
    ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"], now=later)
    assert crt.read_bytes() != first
    renewed = expires(crt)
    assert renewed is not None and renewed > until
    ensure_self_signed(tmp_path, ["10.0.0.1", "localhost"])  # other hosts: new as well
    assert ca.exists()
