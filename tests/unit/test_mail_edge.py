"""The mail edge's pure parts: relay URLs, test-mode answers, the DSNs the outbox writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.logic.dm.sending import parse_dsn
from engine.mail.outbox import build_dsn, forced_answer
from engine.mail.sender import Relay
from tests.unit import aio


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


@pytest.mark.parametrize("raw, content", [
    (b"", b""),
    (b"a\r\n", b"a\r\n"),
    (b"..leading\r\nmid\r\n..\r\n...x\r\n", b".leading\r\nmid\r\n.\r\n..x\r\n"),
    (b"no dots . here\r\n", b"no dots . here\r\n"),
])  # fmt: skip
def test_bulk_data_is_dot_unstuffed(raw, content):
    from engine.mail.outbox import unstuff

    assert unstuff(raw) == content


def test_bulk_data_refuses_a_line_over_1000_octets():
    from engine.mail.outbox import unstuff

    assert unstuff(b"a" * 999 + b"\r\n") == b"a" * 999 + b"\r\n"
    assert unstuff(b"ok\r\n" + b"a" * 1000 + b"\r\n") is None


def test_group_commit_batches_concurrent_callers_and_fails_only_its_batch():
    import asyncio

    from engine.mail.batch import GroupCommit

    written: list[list[int]] = []

    async def write(items):
        written.append(items)
        await asyncio.sleep(0.01)
        if 13 in items:
            raise OSError("disk")
        return [x * 10 for x in items]

    async def go():
        gc = GroupCommit(write, max_batch=4)
        first = asyncio.create_task(gc.submit([1]))
        await asyncio.sleep(0)  # the first goes alone, at once
        rest = [asyncio.create_task(gc.submit([x])) for x in (2, 3, 4, 5, 13)]
        got = await asyncio.gather(first, *rest, return_exceptions=True)
        return gc, got

    gc, got = aio.run(go())
    assert written == [[1], [2, 3, 4, 5], [13]]
    assert got[:5] == [[10], [20], [30], [40], [50]] and isinstance(got[5], OSError)
    assert gc.batches == 2 and gc.items == 5


def test_group_commit_with_a_linger_waits_for_more_unless_the_batch_is_full():
    import asyncio

    from engine.mail.batch import GroupCommit

    written: list[list[int]] = []

    async def write(items):
        written.append(items)
        return [x * 10 for x in items]

    async def go():
        gc = GroupCommit(write, max_batch=3, linger_s=0.2)
        first = asyncio.create_task(gc.submit([1]))
        await asyncio.sleep(0.01)  # within the linger: goes with the first
        rest = [asyncio.create_task(gc.submit([x])) for x in (2, 3, 4)]
        return await asyncio.gather(first, *rest)

    got = aio.run(go())
    assert written == [[1, 2, 3], [4]]  # the first batch filled up; the last waited alone
    assert got == [[10], [20], [30], [40]]


def test_a_mail_batch_decodes_a_table_its_recipients_share_once_and_only_when_equal():
    from engine.store.reco_read import _tables

    wanted = [("trending", "", 1.0, "kt:item:1"), ("in_category", "tv", 0.5, "kt:tv:1")]
    extra = [[b"sku-1"], [b"3"], None]  # the neighbours' popularity and no CF vector

    def reply(tv_rows: list[bytes]) -> list[object]:
        return [[b"sku-1", b"4", b"sku-2", b"2"], tv_rows, *extra]

    seen: dict = {}
    a = _tables(wanted, reply([b"sku-9", b"1"]), seen)
    b = _tables(wanted, reply([b"sku-9", b"1"]), seen)
    c = _tables(wanted, reply([b"sku-8", b"5"]), seen)  # the table changed between the reads
    assert a.trending == [([("sku-1", 4.0), ("sku-2", 2.0)], 1.0)] and a.popularity == {"sku-1": 3.0}
    assert b.trending[0][0] is a.trending[0][0] and b.in_category["tv"][0][0] is a.in_category["tv"][0][0]
    assert c.in_category == {"tv": [([("sku-8", 5.0)], 0.5)]} and c.trending[0][0] is a.trending[0][0]
    assert _tables(wanted, reply([b"sku-9", b"1"])).in_category == a.in_category  # alone: the same rows
