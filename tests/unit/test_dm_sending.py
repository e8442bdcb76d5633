"""The send pipeline's pure rules."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from engine.logic.dm.config import load_dm
from engine.logic.dm.sending import (
    CLICK,
    HARD_BOUNCE,
    HONEYPOT_LINK,
    OPEN,
    RELAY_ERROR,
    RETRY,
    RETRY_SCHEDULE,
    SENT,
    UNSUBSCRIBE,
    BotRules,
    Hit,
    Partner,
    Rate,
    Recipient,
    Reply,
    SendScheduler,
    TokenSigner,
    TrackingUrls,
    bot_reason,
    classify_reply,
    compose_mail,
    engagement_event,
    message_id,
    new_send_id,
    normalise_email,
    parse_dsn,
    parse_verp,
    retry_at,
    soft_bounces_suppress,
    take,
    verp_address,
)
from engine.logic.events import validate

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_dm(ROOT / "config")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = b"k" * 32
SIGNER = TokenSigner([b"t" * 32])
URLS = TrackingUrls("https://kairos.example.com", SIGNER)
SID = new_send_id(bytes(range(16)))


# --- ids --------------------------------------------------------------------------------------


def test_send_ids_are_lower_case_and_check():
    assert SID.lower() == SID and len(SID) == 26
    with pytest.raises(ValueError):
        message_id("UPPER-case!", "x.example")


def test_message_id_is_stable_for_a_send():
    assert message_id(SID, "mail.northgate.example") == f"<dm.{SID}@mail.northgate.example>"
    a, _ = mail(now=T0)
    b, _ = mail(now=T0 + timedelta(hours=3))  # a retry, hours later
    assert a.message_id == b.message_id
    assert header(a, "Message-ID") == header(b, "Message-ID") == a.message_id
    strip = lambda env: b"\n".join(ln for ln in env.data.split(b"\n") if not ln.startswith(b"Date:"))  # noqa: E731
    assert strip(a) == strip(b)  # the same bytes but the Date


def test_verp_names_the_send_and_refuses_forgeries():
    addr = verp_address(SID, "bounces.northgate.example", KEY)
    assert addr.startswith(f"bounce+{SID}.") and addr.endswith("@bounces.northgate.example")
    assert len(addr.split("@")[0]) <= 64
    assert parse_verp(addr, [KEY]) == SID
    assert parse_verp(f"<{addr.upper()}>", [KEY]) == SID  # a relay that upper-cases
    other = new_send_id(b"\x01" * 16)
    forged = addr.replace(SID, other)
    assert parse_verp(forged, [KEY]) is None
    assert parse_verp(addr, [b"x" * 32]) is None
    assert parse_verp("postmaster@bounces.northgate.example", [KEY]) is None


def test_normalise_email():
    assert normalise_email(" Ann.Smith@Example.COM ") == "Ann.Smith@example.com"
    for bad in ["ann", "ann@", "a b@example.com", "ann@example", "<ann@example.com>",
                "ann@example.com\r\nBcc: x@y.z", "ann..x@example.com", None, 5]:  # fmt: skip
        assert normalise_email(bad) is None


# --- tokens -------------------------------------------------------------------------------------


def test_tokens_round_trip_and_tamper_is_invalid():
    click = SIGNER.sign(CLICK, SID, 3)
    assert SIGNER.verify(click) == SIGNER.verify(click) and SIGNER.verify(click).link == 3
    assert SIGNER.verify(SIGNER.sign(OPEN, SID)).kind == OPEN
    assert SIGNER.verify(SIGNER.sign(UNSUBSCRIBE, SID)).link is None
    kind_link, send, sig = click.split(".")
    tampered = [
        f"c4.{send}.{sig}",  # another link
        f"o.{send}.{sig}",  # another kind
        f"{kind_link}.{new_send_id(b'z' * 16)}.{sig}",  # another send
        f"{kind_link}.{send}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",  # another signature
        f"c03.{send}.{sig}",  # a leading zero
        click + "x", "", "c3", "x" * 500, None, 12,
    ]  # fmt: skip
    for t in tampered:
        assert SIGNER.verify(t) is None, t
    assert TokenSigner([b"n" * 32, b"t" * 32]).verify(click) is not None  # rotation: old key accepted
    assert TokenSigner([b"n" * 32]).verify(click) is None


def test_tracking_urls():
    assert URLS.click(SID, 2).startswith("https://kairos.example.com/m/c/c2.")
    assert URLS.open(SID).startswith("https://kairos.example.com/m/o/o.")
    assert SIGNER.verify(URLS.honeypot(SID).rsplit("/", 1)[1]).honeypot
    with pytest.raises(ValueError):
        TrackingUrls("ftp://x", SIGNER)


# --- the message ---------------------------------------------------------------------------------


def mail(template="thank-you", values=None, to="ann.smith@example.com", now=T0, partner_name="Northgate Leeds",
         items=(), track=True):  # fmt: skip
    return compose_mail(
        CONFIG.templates[template], values or {}, send_id=SID,
        to=Recipient(to, "Ann Smith", {"first_name": "Ann"}),
        partner=Partner(partner_name, "leeds@stores.northgate.example", {"phone": "+44 113 496 0000"}),
        urls=URLS, verp_key=KEY, now=now, items=items, track=track,
    )  # fmt: skip


def parsed(env):
    return BytesParser(policy=policy.default).parsebytes(env.data)


def header(env, name):
    return str(parsed(env)[name])


def test_headers_and_multipart():
    env, rendered = mail()
    msg = parsed(env)
    assert msg["From"] == "Northgate Leeds via Northgate Electronics <stores@mail.northgate.example>"
    assert msg["Reply-To"] == "Northgate Leeds <leeds@stores.northgate.example>"
    assert msg["To"] == "Ann Smith <ann.smith@example.com>"
    assert msg["Subject"] == "Thank you for visiting us, Ann"
    unsub = msg["List-Unsubscribe"].strip()  # folded onto its own line (78 columns)
    assert unsub.startswith("<https://kairos.example.com/m/u/u.") and unsub.endswith(">")
    assert SIGNER.verify(unsub.strip("<>").rsplit("/", 1)[1]).kind == UNSUBSCRIBE
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    html = msg.get_body(("html",)).get_content()
    assert "/m/o/o." in html  # the open pixel
    assert 'style="display:none' in html and "/m/c/c65535." in html  # the honeypot
    assert "https://www.northgate.example/new-arrivals" not in html  # tracked
    assert "https://www.northgate.example/new-arrivals" in msg.get_body(("plain",)).get_content()
    assert env.mail_from == verp_address(SID, "bounces.northgate.example", KEY)
    assert env.rcpt_to == "ann.smith@example.com"
    assert all(len(line) <= 998 for line in env.data.split(b"\r\n"))
    assert env.data.isascii()
    assert {lk.url for lk in rendered.links} >= {"https://www.northgate.example/new-arrivals"}


def test_a_test_send_is_not_tracked():
    env, _ = mail(track=False)
    html = parsed(env).get_body(("html",)).get_content()
    assert "/m/o/" not in html and "/m/c/" not in html
    assert "https://www.northgate.example/new-arrivals" in html


def test_header_injection_through_names_is_inert():
    env, _ = mail(partner_name="Evil\r\nBcc: everyone@example.com")
    msg = parsed(env)
    assert msg["Bcc"] is None and "Evil Bcc: everyone@example.com" in msg["From"]
    with pytest.raises(ValueError):
        mail(to="ann@example.com\r\nBcc: x@example.com")


def test_non_ascii_names_are_encoded():
    env, _ = mail(partner_name="Zoë's Électronique")
    assert env.data.isascii()
    assert parsed(env)["From"].addresses[0].display_name == "Zoë's Électronique via Northgate Electronics"


def test_recommendation_links_carry_their_items():
    items = [{"id": "1005115", "name": "Apple Smartphone Pro", "url": "https://www.northgate.example/p/1005115",
              "categories": ["electronics.smartphone"]}]  # fmt: skip
    env, rendered = mail("seasonal-picks", items=items)
    reco = [lk for lk in rendered.links if lk.kind == "recommendation"]
    assert len(reco) == 1 and reco[0].item["categories"] == ["electronics.smartphone"]
    assert URLS.click(SID, reco[0].index) in parsed(env).get_body(("html",)).get_content()


# --- bots ---------------------------------------------------------------------------------------

UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"


@pytest.mark.parametrize("hit, reason", [
    (Hit(CLICK, "GET", UA, T0 + timedelta(minutes=5), 1), None),
    (Hit(OPEN, "GET", UA, T0 + timedelta(seconds=1)), None),
    (Hit(OPEN, "GET", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
         T0 + timedelta(minutes=1)), None),
    (Hit(CLICK, "HEAD", UA, T0 + timedelta(minutes=5), 1), "head"),
    (Hit(OPEN, "HEAD", UA, T0 + timedelta(minutes=5)), "head"),
    (Hit(CLICK, "GET", "", T0 + timedelta(minutes=5), 1), "no_user_agent"),
    (Hit(CLICK, "GET", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
         T0 + timedelta(minutes=5), 1), "user_agent"),
    (Hit(CLICK, "GET", "python-requests/2.32.3", T0 + timedelta(minutes=5), 1), "user_agent"),
    (Hit(CLICK, "GET", "Mozilla/5.0 (compatible; Barracuda Sentinel)", T0 + timedelta(minutes=5), 1), "user_agent"),
    (Hit(CLICK, "GET", UA, T0 + timedelta(seconds=1), 1), "too_soon"),
    (Hit(CLICK, "GET", UA, T0 + timedelta(minutes=5), HONEYPOT_LINK), "honeypot"),
])  # fmt: skip
def test_bot_rules(hit, reason):
    assert bot_reason(hit, delivered_at=T0) == reason


def test_clicks_right_after_a_honeypot_hit_are_bots():
    hp = T0 + timedelta(minutes=10)
    hit = Hit(CLICK, "GET", UA, hp + timedelta(seconds=3), 1)
    assert bot_reason(hit, T0, honeypot_at=hp) == "after_honeypot"
    assert bot_reason(Hit(CLICK, "GET", UA, hp + timedelta(hours=1), 1), T0, honeypot_at=hp) is None
    rules = BotRules(min_open_delay=timedelta(seconds=5))
    assert bot_reason(Hit(OPEN, "GET", UA, T0 + timedelta(seconds=2)), T0, rules) == "too_soon"


# --- SMTP answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, outcome", [
    (Reply(250, "OK", "data"), SENT),
    (Reply(550, "5.1.1 mailbox unavailable", "rcpt"), HARD_BOUNCE),
    (Reply(554, "5.7.1 refused", "data"), HARD_BOUNCE),
    (Reply(451, "4.3.0 try later", "rcpt"), RETRY),
    (Reply(421, "closing", "mail"), RETRY),
    (Reply(None, "ConnectionRefusedError", "connect"), RETRY),
    (Reply(530, "5.7.0 authentication required", "mail"), RELAY_ERROR),
    (Reply(535, "5.7.8 bad credentials", "auth"), RELAY_ERROR),
])  # fmt: skip
def test_classify_reply(reply, outcome):
    assert classify_reply(reply) == outcome


def test_retry_backoff():
    times = [retry_at(n, T0) for n in range(1, len(RETRY_SCHEDULE) + 1)]
    assert times[0] == T0 + timedelta(minutes=1)
    assert all(a < b for a, b in zip(times, times[1:], strict=False))
    assert retry_at(len(RETRY_SCHEDULE) + 1, T0) is None  # give up
    assert T0 + timedelta(minutes=5) < retry_at(2, T0, jitter=0.99) <= T0 + timedelta(minutes=5.5)


def test_soft_bounces_suppress_after_three_in_fourteen_days():
    now = T0
    assert not soft_bounces_suppress([now - timedelta(days=1), now - timedelta(days=2)], now)
    assert soft_bounces_suppress([now - timedelta(days=1), now - timedelta(days=5), now], now)
    assert not soft_bounces_suppress([now - timedelta(days=15), now - timedelta(days=5), now], now)
    assert not soft_bounces_suppress([now + timedelta(days=1)] * 3, now)  # future stamps do not count


DSN = (
    b"From: MAILER-DAEMON@mx.example.org\r\nTo: bounce+x@b.example\r\nSubject: Undelivered\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
    b"Final-Recipient: rfc822; ann@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
    b"Final-Recipient: rfc822; bob@example.com\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
    b"Final-Recipient: rfc822; cy@example.com\r\nAction: failed\r\nStatus: 4.4.7\r\n"
    b"--B--\r\n"
)


def test_parse_dsn():
    results = parse_dsn(DSN)
    assert [(r.recipient, r.action, r.status, r.kind) for r in results] == [
        ("ann@example.com", "failed", "5.1.1", "hard"),
        ("bob@example.com", "delayed", "4.4.1", None),
        ("cy@example.com", "failed", "4.4.7", "soft"),
    ]
    assert results[0].diagnostic == "550 5.1.1 user unknown"
    assert parse_dsn(b"From: a@b.example\r\nSubject: Out of office\r\n\r\nback monday\r\n") == []


# --- rate limits ----------------------------------------------------------------------------------


def run_scheduler(s: SendScheduler, start: datetime, until: datetime) -> list[tuple[datetime, str, str]]:
    """Drive the scheduler with its own wake-up times: what goes out when."""
    sent, now = [], start
    while now <= until:
        sent += [(now, sid, p) for sid, p in s.ready(now)]
        nxt = s.next_at(now)
        if nxt is None:
            break
        now = max(nxt, now + timedelta(milliseconds=1))
    return sent


def test_twelve_sends_at_five_a_minute_span_three_windows_and_another_partner_is_unaffected():
    s = SendScheduler(partner_rate=Rate(5), global_rate=Rate(6000, burst=100))
    for i in range(12):
        s.add(f"a{i}", "partner-a")
    s.add("b0", "partner-b")
    s.add("b1", "partner-b")
    sent = run_scheduler(s, T0, T0 + timedelta(minutes=10))
    a = [t for t, _, p in sent if p == "partner-a"]
    b = [t for t, _, p in sent if p == "partner-b"]
    windows = Counter(int((t - T0).total_seconds() // 60) for t in a)
    assert len(a) == 12 and windows == {0: 5, 1: 5, 2: 2}
    assert max(sum(1 for u in a if t <= u < t + timedelta(minutes=1)) for t in a) == 5  # any 60 s
    assert [sid for _, sid, p in sent if p == "partner-a"] == [f"a{i}" for i in range(12)]  # in order
    # partner B is not held up behind A's queue: both its sends go within its own pace
    assert b == [T0, T0 + timedelta(seconds=12)]


def test_a_partner_over_its_limit_is_deferred_without_blocking_others():
    s = SendScheduler(partner_rate=Rate(60), global_rate=Rate(6000, burst=100),
                      partner_rates={"small": Rate(1)})  # fmt: skip
    for i in range(3):
        s.add(f"s{i}", "small")
        s.add(f"b{i}", "big")
    first = s.ready(T0)
    assert ("s0", "small") in first and ("b0", "big") in first and len(first) == 2
    later = s.ready(T0 + timedelta(seconds=2))
    assert [p for _, p in later] == ["big"]  # small is deferred, big goes on
    assert s.pending("small") == 2


def test_the_global_limit_holds_everyone_and_turns_are_fair():
    s = SendScheduler(partner_rate=Rate(600, burst=10), global_rate=Rate(60, burst=4))
    for i in range(5):
        for p in "xyz":
            s.add(f"{p}{i}", p)
    first = s.ready(T0)
    assert len(first) == 4 and [p for _, p in first] == ["x", "y", "z", "x"]
    assert s.ready(T0) == []
    assert s.next_at(T0) == T0 + timedelta(seconds=1)
    assert [p for _, p in s.ready(T0 + timedelta(seconds=1))] == ["y"]


def test_a_look_ahead_hands_out_a_fast_rate_in_one_batch_each_at_its_own_pace():
    # 6000/min, burst 1: one token every 10 ms. Without a look-ahead only one send may go at
    # T0 (a mailer would claim one send per query); with 250 ms, 25 go, 10 ms apart.
    s = SendScheduler(partner_rate=Rate(60_000), global_rate=Rate(6000))
    for i in range(40):
        s.add(f"a{i}", "a")
    assert len(s.ready_at(T0)) == 1
    got = s.ready_at(T0, horizon=timedelta(milliseconds=250))
    assert [sid for sid, _, _ in got] == [f"a{i}" for i in range(1, 26)]
    times = [at for _, _, at in got]
    assert times[0] == T0 + timedelta(milliseconds=10) and times[-1] == T0 + timedelta(milliseconds=250)
    assert all(abs((b - a) - timedelta(milliseconds=10)) <= timedelta(microseconds=2) for a, b in zip(times, times[1:], strict=False))
    assert s.ready_at(T0, horizon=timedelta(milliseconds=250)) == []  # the tokens are taken
    rest = s.ready_at(T0 + timedelta(milliseconds=250), horizon=timedelta(milliseconds=250))
    assert len(rest) == 14 and rest[0][2] == T0 + timedelta(milliseconds=260)


def test_a_look_ahead_never_puts_a_waiting_partner_before_one_that_may_go_now():
    s = SendScheduler(partner_rate=Rate(60), global_rate=Rate(60_000, burst=100),
                      partner_rates={"slow": Rate(60)})  # fmt: skip
    s.add("s0", "slow")
    s.add("s1", "slow")
    assert s.ready(T0) == [("s0", "slow")]
    s.add("f0", "fast")
    got = s.ready_at(T0 + timedelta(milliseconds=500), horizon=timedelta(seconds=1))
    # slow's next token is at T0 + 1 s; fast has one now and goes first, at once
    assert got == [("f0", "fast", T0 + timedelta(milliseconds=500)), ("s1", "slow", T0 + timedelta(seconds=1))]


def test_token_bucket():
    rate = Rate(60, burst=2)
    ok1, b, _ = take(None, rate, T0)
    ok2, b, _ = take(b, rate, T0)
    ok3, b, at = take(b, rate, T0)
    assert (ok1, ok2, ok3) == (True, True, False) and at == T0 + timedelta(seconds=1)
    with pytest.raises(ValueError):
        Rate(0)


# --- engagement events -------------------------------------------------------------------------------


def test_engagement_events_pass_the_event_spec():
    _, rendered = mail("seasonal-picks", items=[{"id": "1005115", "name": "Phone", "categories": ["electronics.smartphone"],
                                                 "url": "https://www.northgate.example/p/1005115", "brand": "apple"}])  # fmt: skip
    link = next(lk for lk in rendered.links if lk.kind == "recommendation")
    click = engagement_event(CLICK, send_id=SID, contact_id="ct1", at=T0, user_id="u-42", link=link,
                             template="seasonal-picks", partner="leeds")  # fmt: skip
    opened = engagement_event(OPEN, send_id=SID, contact_id="ct1", at=T0, visitor_id="v-abc")
    assert click["type"] == "email_click" and click["channel"] == "email"
    assert click["item"] == {"id": "1005115", "categories": ["electronics.smartphone"], "brand": "apple"}
    assert click["visitor_id"] == "c-ct1" and click["user_id"] == "u-42"
    assert opened["type"] == "email_open" and opened["visitor_id"] == "v-abc" and "item" not in opened
    now_ms = int(T0.timestamp() * 1000) + 1000
    good, bad = validate([click, opened], now_ms)
    assert not bad and len(good) == 2
    again = engagement_event(CLICK, send_id=SID, contact_id="ct1", at=T0 + timedelta(hours=1), link=link)
    assert again["event_id"] == click["event_id"]  # a second click of the link: the same event
    assert opened["event_id"] != click["event_id"]


def _generated(env_data_parts):
    """The same message built by the email package's own generator (the reference)."""
    from email.message import Message
    from email.mime.multipart import MIMEMultipart

    headers, text, html, boundary = env_data_parts
    msg = MIMEMultipart("alternative", boundary=boundary)
    del msg["MIME-Version"]
    for name, value in headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    for subtype, body in (("plain", text), ("html", html)):
        import binascii

        part = Message()
        part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        part["Content-Transfer-Encoding"] = "quoted-printable"
        body = body.replace("\r\n", "\n").replace("\r", "\n")
        part.set_payload(binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii"))
        msg.attach(part)
    return msg.as_bytes(policy=policy.compat32.clone(linesep="\r\n"))


@pytest.mark.parametrize("name", ["Ann Smith", "", "Zoë Łukasz", "O'Brien, Pat", "東京 太郎",
                                  "A display name long enough to need folding beyond seventy-eight columns"])
@pytest.mark.parametrize("body", ["", "x", "trailing space \nnext\n", "é" * 300, "\r\nmixed\r\nends\r", ".\n.dot\n"])
def test_the_hand_built_message_is_what_the_email_package_generates(name, body):
    from email.header import Header

    from engine.logic.dm.sending import build_message
    from engine.logic.dm.templates import RenderedMessage

    unsub = "https://kairos.example.com/m/u/u.abcdefgh12345678.3pg3zc4mEU2NUJkVyRssBA"
    got = build_message(RenderedMessage(f"Hi {name}", body, body + "!", ()), send_id="abcdefgh12345678",
                        from_display=name or "Shop", from_address="stores@mail.example", to=Recipient("a@example.com", name),
                        reply_to=Partner(name, "p@example.com"), unsubscribe_url=unsub,
                        message_id_domain="mail.example", now=T0)

    def box(n, a):
        from email.utils import formataddr

        if not n:
            return a
        if n.isascii():
            return formataddr((n, a))
        h = Header()
        h.append(n, "utf-8")
        h.append(f"<{a}>", "us-ascii")
        return h

    subject = f"Hi {name}".strip()
    headers = [("From", box(name or "Shop", "stores@mail.example")), ("To", box(name, "a@example.com"))]
    headers += [("Reply-To", box(name, "p@example.com"))]
    headers += [("Subject", subject if subject.isascii() else Header(subject, "utf-8")),
                ("Date", "Mon, 02 Mar 2026 09:00:00 +0000"), ("Message-ID", "<dm.abcdefgh12345678@mail.example>"),
                ("List-Unsubscribe", f"<{unsub}>"), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ("X-Kairos-Send", "abcdefgh12345678")]
    assert got == _generated((headers, body + "!", body, "=_kairos_abcdefgh12345678_alt"))


def test_a_campaigns_values_and_item_blocks_render_once_and_still_per_recipient():
    from engine.logic.dm import templates as tp

    items = [{"id": f"sku-{i}", "name": f"Product {i}", "url": f"https://www.northgate.example/p/sku-{i}",
              "categories": ["tv.oled"]} for i in range(4)]
    tp._ITEM_PARTS.clear()
    first, _ = mail("seasonal-picks", items=items[:3])
    cached = len(tp._ITEM_PARTS)
    assert cached == 6  # 3 slots x (html, text)
    again, _ = mail("seasonal-picks", items=items[:3])
    assert again.data == first.data and len(tp._ITEM_PARTS) == cached
    other, rendered = mail("seasonal-picks", items=items[1:])  # other items: their own blocks
    html = parsed(other).get_body(("html",)).get_content()
    assert "Product 3" in html and "Product 0" not in html
    assert [lk.item["id"] for lk in rendered.links if lk.kind == "recommendation"] == ["sku-1", "sku-2", "sku-3"]
    with pytest.raises(ValueError):  # a bad value is refused every time, never remembered
        mail("seasonal-picks", values={"headline": ""}, items=items)
    with pytest.raises(ValueError):
        mail("seasonal-picks", values={"headline": ""}, items=items)
