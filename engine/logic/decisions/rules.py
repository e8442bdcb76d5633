"""Targeting rule language: YAML data compiled once into plain Python callables.

A rule is a mapping with exactly one key: ``all`` / ``any`` (a list of rules), ``not`` (a rule)
or a predicate name (its parameters). Nothing in a rule, a profile or a context is ever
evaluated as code: every value is data compared with data.

Compiled rules have the signature ``rule(profile, context, now) -> bool`` where ``now`` is a
time-zone-aware ``datetime`` or epoch milliseconds.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, time
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2  # type: ignore[import-untyped]

Profile = Mapping[str, Any]
Context = Mapping[str, Any]
Now = datetime | int | float
Rule = Callable[[Profile, Context, Now], bool]
Path = tuple[str | int, ...]

MAX_PATTERN_LEN = 200
MAX_URL_LEN = 4096
MAX_LIST_LEN = 1000
MAX_DEPTH = 32
SESSION_MS = 30 * 60 * 1000
_DAY_MS = 86_400_000
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": _DAY_MS, "w": 7 * _DAY_MS}
_DURATION_RE = re.compile(r"^\s*(\d{1,7}(?:\.\d{1,3})?)\s*(ms|s|m|h|d|w)\s*$")
# url regexes run on the visitor's URL (up to MAX_URL_LEN): RE2 matches in linear time,
# whatever the pattern (no backtracking, so `(a|a)*$` costs what `a*$` costs)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 1 << 20  # a pattern whose automaton needs more is refused at load
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RuleError(ValueError):
    """A rule is malformed; ``path`` locates the offending value inside the rule."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{format_path(path)} {message}")


def format_path(path: Path) -> str:
    """Render ``("rule", "all", 2, "affinity")`` as ``rule.all[2].affinity``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- time helpers ------------------------------------------------------------------------


def as_ms(now: Now) -> int:
    """Epoch milliseconds for an aware datetime or a number of milliseconds."""
    if type(now) is int:
        return now
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be time-zone aware")
        return int(now.timestamp() * 1000)
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise TypeError("now must be an aware datetime or epoch milliseconds")
    return int(now)


def as_datetime(now: Now, tz: ZoneInfo) -> datetime:
    """``now`` as an aware datetime in ``tz``."""
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be time-zone aware")
        return now.astimezone(tz)
    return datetime.fromtimestamp(as_ms(now) / 1000, tz)


def parse_duration_ms(value: Any, path: Path) -> int:
    """``"7d"`` / ``"12h"`` / ``"30m"`` / ``"45s"`` / ``"2w"`` / ``"500ms"`` to milliseconds."""
    if not isinstance(value, str):
        raise RuleError(path, 'must be a duration string like "7d", "12h" or "30m"')
    m = _DURATION_RE.match(value)
    if not m:
        raise RuleError(path, f'must be a duration like "7d", "12h" or "30m", got {value!r}')
    ms = int(float(m.group(1)) * _UNITS_MS[m.group(2)])
    if ms <= 0 or ms > 3650 * _DAY_MS:
        raise RuleError(path, "must be between 1ms and 3650d")
    return ms


def load_zone(value: Any, path: Path) -> ZoneInfo:
    """An IANA time zone, validated."""
    if not isinstance(value, str) or not value or len(value) > 64:
        raise RuleError(path, 'must be an IANA time zone name like "Europe/Paris"')
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(path, f"unknown time zone {value!r}") from None


# --- parameter validation ----------------------------------------------------------------


def _params(value: Any, path: Path, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RuleError(path, "must be a mapping")
    allowed_set = set(allowed)
    for key in value:
        if key not in allowed_set:
            raise RuleError(
                path + (str(key),), f"is not a known option (expected one of {sorted(allowed_set)})"
            )
    for key in required:
        if key not in value:
            raise RuleError(path + (key,), "is required")
    return dict(value)


def _str(value: Any, path: Path, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value:
        raise RuleError(path, "must be a non-empty string")
    if len(value) > max_len:
        raise RuleError(path, f"must be at most {max_len} characters")
    return value


def _number(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError(path, "must be a number")
    return float(value)


def _int(value: Any, path: Path, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(path, "must be an integer")
    if value < minimum:
        raise RuleError(path, f"must be >= {minimum}")
    return value


def _bool(value: Any, path: Path) -> bool:
    if not isinstance(value, bool):
        raise RuleError(path, "must be true or false")
    return value


def _op(value: Any, path: Path) -> Callable[[float, float], bool]:
    if value not in _OPS:
        raise RuleError(path, f"must be one of {list(_OPS)}")
    return _OPS[value]


def _str_set(value: Any, path: Path) -> frozenset[str]:
    """A string or a list of strings, as a set."""
    if isinstance(value, str):
        return frozenset([_str(value, path)])
    if not isinstance(value, list) or not value:
        raise RuleError(path, "must be a string or a non-empty list of strings")
    if len(value) > MAX_LIST_LEN:
        raise RuleError(path, f"must have at most {MAX_LIST_LEN} entries")
    return frozenset(_str(v, path + (i,)) for i, v in enumerate(value))


def _scalar(value: Any, path: Path) -> str | float | bool:
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        return _number(value, path)
    raise RuleError(path, "must be a string, number or boolean")


def _compare(params: dict[str, Any], path: Path) -> Callable[[float], bool]:
    op = _op(params.get("op", ">="), path + ("op",))
    if "value" not in params:
        raise RuleError(path + ("value",), "is required")
    ref = _number(params["value"], path + ("value",))
    return lambda x: op(x, ref)


# --- safe accessors on profile / context -------------------------------------------------


# (the stream evaluates every segment for every profile a batch changes: plain dicts, ints and
# floats, checked by their exact type first, skip the slower abstract-class checks)


def _map(obj: Any, key: str) -> Mapping[str, Any]:
    value = obj.get(key) if type(obj) is dict or isinstance(obj, Mapping) else None
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _seq(obj: Any, key: str) -> Sequence[Any]:
    value = obj.get(key) if type(obj) is dict or isinstance(obj, Mapping) else None
    return value if isinstance(value, list | tuple) else ()


def _num(value: Any) -> float | None:
    t = type(value)
    if t is float:
        return value if math.isfinite(value) else None
    if t is int:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(obj: Any, key: str) -> str:
    value = obj.get(key) if type(obj) is dict or isinstance(obj, Mapping) else None
    return value if isinstance(value, str) else ""


def top_keys(scores: Mapping[str, Any], n: int) -> list[str]:
    """The ``n`` keys with the highest numeric score, ties by key."""
    valid = [(k, s) for k, v in scores.items() if isinstance(k, str) and (s := _num(v)) is not None]
    valid.sort(key=lambda kv: (-kv[1], kv[0]))
    return [k for k, _ in valid[:n]]


# --- predicates ---------------------------------------------------------------------------


def _p_affinity(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("dimension", "key", "op", "value", "top"), ("dimension",))
    dim = _str(p["dimension"], path + ("dimension",))
    key = _str(p["key"], path + ("key",)) if "key" in p else None
    test = _compare(p, path) if ("value" in p or "op" in p) else None
    top = _int(p["top"], path + ("top",), 1) if "top" in p else None
    if test is None and top is None:
        raise RuleError(path, "needs value (with op) or top")
    if top is not None and key is None:
        raise RuleError(path + ("key",), "is required with top")

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        scores = _map(_map(profile, "affinities"), dim)
        if top is not None and key not in top_keys(scores, top):
            return False
        if test is None:
            return True
        if key is None:
            nums = [s for v in scores.values() if (s := _num(v)) is not None]
            return bool(nums) and test(max(nums))
        score = _num(scores.get(key))
        return test(score if score is not None else 0.0)

    return rule


def _p_event(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("type", "min_count", "max_count", "within"), ("type",))
    etype = _str(p["type"], path + ("type",))
    min_count = _int(p.get("min_count", 1), path + ("min_count",))
    max_count = _int(p["max_count"], path + ("max_count",)) if "max_count" in p else None
    within = parse_duration_ms(p["within"], path + ("within",)) if "within" in p else None
    if within is not None and min_count == 0:
        raise RuleError(path + ("min_count",), "must be >= 1 when within is set")

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        stats = _map(_map(profile, "types"), etype)
        count = _num(stats.get("count")) or 0.0
        if count < min_count or (max_count is not None and count > max_count):
            return False
        if within is None:
            return True
        last = _num(stats.get("last"))
        return last is not None and as_ms(now) - last <= within

    return rule


def _p_segment(raw: Any, path: Path) -> Rule:
    wanted = _str_set(raw, path)

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        return any(s in wanted for s in _seq(profile, "segments") if isinstance(s, str))

    return rule


def _p_trait(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("name", "exists", "equals", "in"), ("name",))
    name = _str(p["name"], path + ("name",))
    exists = _bool(p["exists"], path + ("exists",)) if "exists" in p else None
    equals = _scalar(p["equals"], path + ("equals",)) if "equals" in p else None
    one_of = _str_set(p["in"], path + ("in",)) if "in" in p else None
    if exists is None and equals is None and one_of is None:
        raise RuleError(path, "needs one of exists, equals, in")

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        traits = _map(profile, "traits")
        value = traits.get(name)
        present = value is not None and value != ""
        if exists is not None and present != exists:
            return False
        if equals is not None and not _same(value, equals):
            return False
        return one_of is None or (isinstance(value, str) and value in one_of)

    return rule


def _same(value: Any, ref: str | float | bool) -> bool:
    if isinstance(ref, bool | str):
        return type(value) is type(ref) and value == ref
    return _num(value) == ref


def _p_event_count(raw: Any, path: Path) -> Rule:
    test = _compare(_params(raw, path, ("op", "value"), ("value",)), path)

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        count = _num(profile.get("event_count")) if isinstance(profile, Mapping) else None
        return test(count or 0.0)

    return rule


def _p_propensity(name: str) -> Callable[[Any, Path], Rule]:
    """`exit_probability: {op: ">", value: 0.6}`: the visitor's learnt propensity (the
    profile view's `propensity`, filled at decision time); no score yet: false."""

    def build(raw: Any, path: Path) -> Rule:
        p = _params(raw, path, ("op", "value"), ("value",))
        test = _compare(p, path)
        value = _num(p["value"])
        if value is None or not 0.0 <= value <= 1.0:
            raise RuleError(path + ("value",), "must be a probability in [0, 1]")

        def rule(profile: Profile, context: Context, now: Now) -> bool:
            score = _num(_map(profile, "propensity").get(name))
            return score is not None and test(score)

        return rule

    return build


PROPENSITY_PREDICATES = ("exit_probability", "purchase_probability")


def uses_propensity(spec: Any) -> bool:
    """Whether a (valid) rule spec targets a propensity anywhere."""
    if isinstance(spec, Mapping):
        return any(k in PROPENSITY_PREDICATES or uses_propensity(v) for k, v in spec.items())
    if isinstance(spec, list):
        return any(uses_propensity(x) for x in spec)
    return False


def _p_first_visit(raw: Any, path: Path, want_first: bool = True) -> Rule:
    flag = _bool(raw, path)

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        first_seen = _num(profile.get("first_seen")) if isinstance(profile, Mapping) else None
        first = first_seen is None or as_ms(now) - first_seen <= SESSION_MS
        return (first == want_first) == flag

    return rule


def _p_returning(raw: Any, path: Path) -> Rule:
    return _p_first_visit(raw, path, want_first=False)


def _p_days_since_first_seen(raw: Any, path: Path) -> Rule:
    test = _compare(_params(raw, path, ("op", "value"), ("value",)), path)

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        first_seen = _num(profile.get("first_seen")) if isinstance(profile, Mapping) else None
        days = 0.0 if first_seen is None else (as_ms(now) - first_seen) / _DAY_MS
        return test(days)

    return rule


def _p_known(raw: Any, path: Path) -> Rule:
    flag = _bool(raw, path)
    return lambda profile, context, now: bool(_text(profile, "user_id")) == flag


def _p_cart_size(raw: Any, path: Path) -> Rule:
    test = _compare(_params(raw, path, ("op", "value"), ("value",)), path)
    return lambda profile, context, now: test(float(len(_seq(profile, "cart"))))


def _p_used_channel(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("channel", "within"), ("channel",))
    wanted = _str_set(p["channel"], path + ("channel",))
    within = parse_duration_ms(p["within"], path + ("within",)) if "within" in p else None

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        channels = _map(profile, "channels")
        for name in wanted:
            last = _num(channels.get(name))
            if last is not None and (within is None or as_ms(now) - last <= within):
                return True
        return False

    return rule


def _context_in(field: str) -> Callable[[Any, Path], Rule]:
    def build(raw: Any, path: Path) -> Rule:
        wanted = frozenset(v.casefold() for v in _str_set(raw, path))
        return lambda profile, context, now: _text(context, field).casefold() in wanted

    return build


def _safe_regex(pattern: Any, path: Path) -> Callable[[str], bool]:
    """A full-match test in linear time (RE2); a pattern RE2 cannot run in linear time
    (back-references, look-around) is refused with RE2's reason."""
    text = _str(pattern, path, MAX_PATTERN_LEN)
    try:
        compiled = re2.compile(text, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RuleError(path, f"is not a valid RE2 regular expression ({reason}); back-references "
                              "and look-around are not supported") from None
    return lambda s: compiled.fullmatch(s) is not None


def _url_part(url: str, part: str) -> str:
    if part == "url":
        return url
    try:
        split = urlsplit(url)
    except ValueError:
        return ""
    return split.path if part == "path" else (split.hostname or "")


def _p_url(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("glob", "regex", "contains", "on"))
    part = p.get("on", "url")
    if part not in ("url", "path", "host"):
        raise RuleError(path + ("on",), "must be one of ['url', 'path', 'host']")
    kinds = [k for k in ("glob", "regex", "contains") if k in p]
    if len(kinds) != 1:
        raise RuleError(path, "needs exactly one of glob, regex, contains")
    kind = kinds[0]
    if kind == "contains":
        needle = _str(p["contains"], path + ("contains",), MAX_PATTERN_LEN)
        matcher: Callable[[str], bool] = lambda s: needle in s  # noqa: E731
    else:
        if kind == "glob":  # fnmatch's translation uses atomic groups: no backtracking blow-up
            glob = _str(p["glob"], path + ("glob",), MAX_PATTERN_LEN)
            compiled = re.compile(fnmatch.translate(glob))
            matcher = lambda s: compiled.fullmatch(s) is not None  # noqa: E731
        else:
            matcher = _safe_regex(p["regex"], path + ("regex",))

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        url = _text(context, "url")
        if not url or len(url) > MAX_URL_LEN:
            return False
        return matcher(_url_part(url, part))

    return rule


def _p_referrer(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("contains", "domain", "empty"))
    if len(p) != 1:
        raise RuleError(path, "needs exactly one of contains, domain, empty")
    if "empty" in p:
        empty = _bool(p["empty"], path + ("empty",))
        return lambda profile, context, now: (not _text(context, "referrer")) == empty
    if "contains" in p:
        needle = _str(p["contains"], path + ("contains",)).casefold()
        return lambda profile, context, now: needle in _text(context, "referrer").casefold()
    domains = frozenset(d.casefold().strip(".") for d in _str_set(p["domain"], path + ("domain",)))

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        ref = _text(context, "referrer")
        if not ref or len(ref) > MAX_URL_LEN:
            return False
        host = _url_part(ref, "host").casefold()
        return any(host == d or host.endswith("." + d) for d in domains)

    return rule


_UTM_KEYS = ("source", "medium", "campaign", "term", "content")


def utm_of(context: Context) -> dict[str, str]:
    """UTM values from ``context["utm"]``, else parsed from the URL query string."""
    utm = _map(context, "utm")
    if utm:
        return {k: v for k, v in utm.items() if isinstance(v, str)}
    url = _text(context, "url")
    if not url or len(url) > MAX_URL_LEN:
        return {}
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {k: query[f"utm_{k}"][0] for k in _UTM_KEYS if f"utm_{k}" in query}


def _p_utm(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, _UTM_KEYS)
    if not p:
        raise RuleError(path, f"needs at least one of {list(_UTM_KEYS)}")
    wanted = {k: frozenset(s.casefold() for s in _str_set(v, path + (k,))) for k, v in p.items()}

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        utm = utm_of(context)
        return all(utm.get(k, "").casefold() in vals for k, vals in wanted.items())

    return rule


def _clock(value: Any, path: Path) -> time:
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,2}:\d{2}", value):
        raise RuleError(path, 'must be a time like "09:00"')
    hours, minutes = (int(x) for x in value.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise RuleError(path, 'must be a time between "00:00" and "24:00"')
    return time.max if hours == 24 else time(hours, minutes)


def _p_time_of_day(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("after", "before", "timezone"), ("after", "before"))
    start = _clock(p["after"], path + ("after",))
    end = _clock(p["before"], path + ("before",))
    tz = load_zone(p.get("timezone", "UTC"), path + ("timezone",))

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        t = as_datetime(now, tz).time().replace(tzinfo=None)
        return start <= t < end if start <= end else (t >= start or t < end)

    return rule


def _p_day_of_week(raw: Any, path: Path) -> Rule:
    p = _params(raw, path, ("days", "timezone"), ("days",))
    days = _str_set(p["days"], path + ("days",))
    bad = sorted(d for d in days if d.lower()[:3] not in _DAYS)
    if bad:
        raise RuleError(path + ("days",), f"has unknown days {bad} (use mon..sun)")
    wanted = frozenset(_DAYS.index(d.lower()[:3]) for d in days)
    tz = load_zone(p.get("timezone", "UTC"), path + ("timezone",))
    return lambda profile, context, now: as_datetime(now, tz).weekday() in wanted


def _p_locale(raw: Any, path: Path) -> Rule:
    wanted = frozenset(v.replace("_", "-").casefold() for v in _str_set(raw, path))

    def rule(profile: Profile, context: Context, now: Now) -> bool:
        loc = _text(context, "locale").replace("_", "-").casefold()
        return any(loc == w or loc.startswith(w + "-") for w in wanted)

    return rule


def _p_always(raw: Any, path: Path) -> Rule:
    flag = _bool(raw, path)
    return lambda profile, context, now: flag


PREDICATES: dict[str, Callable[[Any, Path], Rule]] = {
    "affinity": _p_affinity,
    "event": _p_event,
    "segment": _p_segment,
    "trait": _p_trait,
    "known": _p_known,
    "event_count": _p_event_count,
    "first_visit": _p_first_visit,
    "returning": _p_returning,
    "days_since_first_seen": _p_days_since_first_seen,
    "cart_size": _p_cart_size,
    "used_channel": _p_used_channel,
    "channel": _context_in("channel"),
    "page_type": _context_in("page_type"),
    "device": _context_in("device"),
    "url": _p_url,
    "referrer": _p_referrer,
    "utm": _p_utm,
    "time_of_day": _p_time_of_day,
    "day_of_week": _p_day_of_week,
    "locale": _p_locale,
    "always": _p_always,
    "exit_probability": _p_propensity("exit"),
    "purchase_probability": _p_propensity("purchase"),
}


# --- compiler -----------------------------------------------------------------------------


def compile_rule(spec: Any, path: Path = ("rule",)) -> Rule:
    """Validate ``spec`` and compile it into ``rule(profile, context, now) -> bool``."""
    return _compile(spec, path, 0)


def _compile(spec: Any, path: Path, depth: int) -> Rule:
    if depth > MAX_DEPTH:
        raise RuleError(path, f"is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise RuleError(
            path, "must be a mapping with exactly one key (all, any, not or a predicate)"
        )
    ((name, arg),) = spec.items()
    here = path + (str(name),)
    if name in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            raise RuleError(here, "must be a non-empty list of rules")
        children = tuple(_compile(c, here + (i,), depth + 1) for i, c in enumerate(arg))
        return _all(children) if name == "all" else _any(children)
    if name == "not":
        child = _compile(arg, here, depth + 1)
        return lambda p, c, n: not child(p, c, n)
    builder = PREDICATES.get(name) if isinstance(name, str) else None
    if builder is None:
        raise RuleError(
            here, f"is not a known predicate (known: all, any, not, {', '.join(PREDICATES)})"
        )
    return builder(arg, here)


# `all` / `any` as plain loops (a generator per call costs more than most predicates), with
# the common short lists unrolled; evaluated in order, stopping at the first that decides
def _all(children: tuple[Rule, ...]) -> Rule:
    if len(children) == 1:
        return children[0]
    if len(children) == 2:
        a, b = children
        return lambda p, c, n: a(p, c, n) and b(p, c, n)

    def rule(p: Profile, c: Context, n: Now) -> bool:
        for child in children:  # noqa: SIM110 - a loop, not a generator, on purpose
            if not child(p, c, n):
                return False
        return True

    return rule


def _any(children: tuple[Rule, ...]) -> Rule:
    if len(children) == 1:
        return children[0]
    if len(children) == 2:
        a, b = children
        return lambda p, c, n: a(p, c, n) or b(p, c, n)

    def rule(p: Profile, c: Context, n: Now) -> bool:
        for child in children:  # noqa: SIM110 - a loop, not a generator, on purpose
            if child(p, c, n):
                return True
        return False

    return rule


def referenced_segments(spec: Any) -> set[str]:
    """Segment ids named by ``segment`` predicates anywhere in a (valid) rule spec."""
    found: set[str] = set()
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key == "segment":
                found |= (
                    {value} if isinstance(value, str) else {v for v in value if isinstance(v, str)}
                )
            else:
                found |= referenced_segments(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= referenced_segments(item)
    return found
