"""The mail edge's pure parts: relay URLs, test-mode answers, the DSNs the outbox writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.logic.dm.sending import parse_dsn
from engine.mail.outbox import build_dsn, forced_answer
from engine.mail.sender import Relay


def test_relay_urls():
    r = Relay.from_url("smtp://127.0.0.1:2525")
    assert (r.host, r.port, r.implicit_tls, r.starttls, r.username) == ("127.0.0.1", 2525, False, "auto", None)
    r = Relay.from_url("smtp://mailer%40brand:p%3Ass@smtp.example.com:587?starttls=require&timeout=10")
    assert (r.username, r.password, r.starttls, r.timeout) == ("mailer@brand", "p:ss", "require", 10.0)
    assert "p:ss" not in repr(r)
    assert Relay.from_url("smtps://smtp.example.com").port == 465
    assert Relay.from_url("smtp://smtp.example.com").port == 25
    for bad in ["http://x", "smtp://", "smtp://h:99999", "smtp://h?starttls=maybe", "smtp://h?tls=1",
                "smtp://h?timeout=0"]:  # fmt: skip
        with pytest.raises(ValueError):
            Relay.from_url(bad)


def test_test_mode_answers():
    assert forced_answer("ann@example.com") is None
    a = forced_answer("smtp-550@x.test")
    assert (a.code, a.at_data, a.once) == (550, False, False) and a.line.startswith("550 5.1.1 ")
    a = forced_answer("smtp-451-once+abc@x.test")
    assert (a.code, a.once) == (451, True) and a.line.startswith("451 4.3.0 ")
    assert forced_answer("smtp-554-data-once@x.test").at_data
    assert forced_answer("smtp-250@x.test") is None  # only 4xx and 5xx


@pytest.mark.parametrize("kind, status", [("hard", "5.1.1"), ("soft", "4.4.7")])
def test_the_outbox_dsns_parse(kind, status):
    raw = build_dsn(mail_from="bounce+abcdefgh.aaaaaaaa@b.example", recipient="ann@example.com",
                    kind=kind, reporting_mta="mx.example", original_headers=b"Subject: hi\r\n",
                    now=datetime(2026, 3, 2, tzinfo=UTC))  # fmt: skip
    (result,) = parse_dsn(raw)
    assert (result.recipient, result.action, result.status, result.kind) == ("ann@example.com", "failed", status, kind)
