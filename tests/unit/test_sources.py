"""Replay sources: Taobao, REES46 and JSON lines become sorted normalised events."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.sources import detect_format, load_events, parse_ts

TAOBAO = "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511544000\n2,7,5,buy,1511544070\n3,8,5,cart,1511544001\n"
REES46 = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    "2019-10-01 00:00:01 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1\n"
    "2019-10-01 00:00:00 UTC,cart,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,554748717,s2\n"
    "2019-10-01 00:00:01 UTC,purchase,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,\n"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_taobao(tmp_path: Path) -> None:
    path = write(tmp_path, "tb.csv", TAOBAO)
    assert detect_format(path) == "taobao"
    events = load_events(path)
    assert [e["event_id"] for e in events] == ["tb-2", "tb-4", "tb-1", "tb-3"]  # stable by ts
    assert [e["type"] for e in events] == ["favorite", "add_to_cart", "item_view", "purchase"]
    assert events[2] == {
        "event_id": "tb-1",
        "type": "item_view",
        "visitor_id": "tb1",
        "ts": 1511544070000,
        "item": {"id": "2268318", "categories": ["2520377"]},
    }


def test_rees46(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", REES46)
    assert detect_format(path) == "rees46"
    cart, view, buy = load_events(path)
    assert cart["type"] == "add_to_cart" and cart["ts"] == 1569888000000
    assert cart["item"] == {
        "id": "3900821",
        "categories": ["appliances/environment/water_heater"],
        "brand": "aqua",
        "price": 33.2,
    }
    assert cart["items"] == [{**cart["item"], "quantity": 1}]
    assert view["item"]["categories"] == ["2103807459595387724"]  # no code: the category id
    assert view["visitor_id"] == "541312140" and view["event_id"] == "r46-2"
    assert view["context"] == {"session_id": "s1"}
    assert buy["type"] == "purchase" and "brand" not in buy["item"] and "context" not in buy


def test_jsonl_ts_forms(tmp_path: Path) -> None:
    lines = [
        '{"event_id":"a","type":"page_view","visitor_id":"v","ts":"2024-01-01T00:00:01Z"}',
        "",
        '{"event_id":"b","type":"item_view","visitor_id":"v","ts":1704067200000,"item":{"id":"x"}}',
        '{"event_id":"c","type":"search","visitor_id":"w","ts":"2024-01-01T01:00:00+01:00"}',
    ]
    path = write(tmp_path, "e.jsonl", "\n".join(lines) + "\n")
    assert detect_format(path) == "jsonl"
    events = load_events(path)
    assert [(e["event_id"], e["ts"]) for e in events] == [
        ("b", 1704067200000),
        ("c", 1704067200000),
        ("a", 1704067201000),
    ]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("tb.csv", "1,2,3,pv,1511544070\n1,2,3,look,1511544070\n", ":2:"),
        ("tb.csv", "1,2,3,pv,1511544070\n1,2,pv,1511544070\n", ":2:"),
        ("tb.csv", "1,2,3,pv,1511544070\n1,x,3,pv,1511544070\n", ":2:"),
        ("r.csv", REES46 + "2019-10-01 00:00:01 UTC,view,1,2,,b,notaprice,5,s\n", ":5:"),
        ("r.csv", REES46 + "2019-10-01 00:00:01,view,1,2,,b,1.0,5,s\n", ":5:"),
        (
            "e.jsonl",
            '{"event_id":"a","type":"t","visitor_id":"v","ts":1}\n{"event_id":"a"}\n',
            ":2:",
        ),
        ("e.jsonl", '{"event_id":"a","type":"t","visitor_id":"v","ts":1}\n{oops\n', ":2:"),
        (
            "e.jsonl",
            '{"event_id":"a","type":"t","visitor_id":"v","ts":"2024-01-01T00:00:00"}\n',
            ":1:",
        ),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, name: str, text: str, where: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError, match=where):
        load_events(path)


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        load_events(write(tmp_path, "x.txt", "hello world\n"))
    with pytest.raises(ValueError, match="unknown format"):
        load_events(write(tmp_path, "y.csv", TAOBAO), fmt="parquet")


def test_explicit_format(tmp_path: Path) -> None:
    assert len(load_events(write(tmp_path, "t.data", TAOBAO), fmt="taobao")) == 4


def test_parse_ts() -> None:
    assert parse_ts(5) == 5
    assert parse_ts("17") == 17
    assert parse_ts("1970-01-01T00:00:01.5+00:00") == 1500
    with pytest.raises(ValueError):
        parse_ts(True)
