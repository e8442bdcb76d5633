"""Visitor profiles and their affinities, with forward decay.

Forward decay (Cormode, Shkapenyuk, Srivastava, Xu, ICDE 2009): an event of weight `w` at
time `t` adds `w·e^{λ(t−L)}` to a stored score, for a landmark `L` fixed per profile. The
current score is `stored·e^{−λ(now−L)}`, so ranking never needs old entries rewritten. When
`λ(t−L)` grows large the profile rescales: every stored value is multiplied by
`e^{−λ(t'−L)}` and the landmark moves to `t'`, long before floats lose precision.

Everything here is pure: plain data in, plain data out, the time comes from the events or
is passed in. A profile is one compact msgpack blob (`snapshot()` / `restore()`), and the
dedupe marks of recent `event_id`s travel in the same blob, so applying an event and
marking it seen are one write.

Blob schema 2 (schema 1 blobs still restore, and are written as 2 the next time): every string
key (category paths, brands, tags, item ids of the affinities, the recent, cart, purchased and
bought items, the session's items) is stored once, in one sorted table written with front
coding (each entry: the length it shares with the one before, then the rest: an ancestor path
costs a few bytes more than its leaf, neighbouring item ids share their prefix), and referred to
by its index everywhere else (the ids that are plain decimal numbers, as many catalogs' are,
are stored as integers, before the strings); the times are stored relative to `last_seen`; the
dedupe ring keeps 4-byte fingerprints (schema 1: 5).

Blob schema 3 (schemas 1 and 2 still restore, and are written as 3 the next time): as schema 2,
but the affinity tables are one binary string of fixed-size records (`_REC`: the key's index,
the dimension with the event-type code, the float32 value), instead of per-dimension msgpack
arrays of index lists and `[code, value, ...]` lists (about 7 B per entry: 6).

Blob schema 4 (schemas 1-3 still restore, and are written as 4 the next time), the same values
in fewer bytes: the decimal ids of the string table are one string of fixed-width
little-endian numbers (the widest's width, stored byte plane by byte plane: ids below 2^24 take
3 bytes instead of msgpack's 5); the affinity records of each dimension are sorted by their
key's index, so a record is a one-byte head (the step from the previous record's index in its
top 3 bits, 0 = the same key's next event type, 7 = "the index is written out"; the event-type
code in its low 5 bits, 31 = "the code is written out") and its float32 value: 5 B instead of
6. Beside the records, one list: each dimension's record count and first key's index, then what
the heads wrote out, in order (usually nothing). The string table of the blob a profile was
restored from is kept with it: the next snapshot reuses it while the profile names the same
strings, and otherwise classifies only the strings added and reuses the packed ids or the
front-coded words when they did not change. Bytes that are not a profile blob raise ValueError.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from typing import Any

import msgpack

from engine.logic.common import category_ancestors
from models.session import Session, SessionConfig
from models.session import advance as advance_session

DIMENSIONS = ("category", "brand", "tag", "item")
_DIM_INDEX = {d: i for i, d in enumerate(DIMENSIONS)}

# Stable codes for event types inside stored blobs (0 = any custom type).
TYPE_CODES = {
    "page_view": 1,
    "item_view": 2,
    "add_to_cart": 3,
    "remove_from_cart": 4,
    "purchase": 5,
    "search": 6,
    "click": 7,
    "conversion": 8,
    "impression": 9,
    "dismiss": 10,
    "identify": 11,
    "email_open": 12,
    "email_click": 13,
}
CODE_NAMES = {v: k for k, v in TYPE_CODES.items()} | {0: "other"}

SCHEMA_VERSION = 4
# Schema 3's affinity record: the key's index in the string table (one byte while the table has
# at most 256 strings, else two), the dimension (top 2 bits) with the event-type code (6 bits),
# the forward-decayed value as a float32 (what schema 2's msgpack floats held, so the values
# round-trip identically).
_REC = "<BBf"
_REC_WIDE = "<HBf"
# What a profile keeps of what clients name freely, so that every decide reads a bounded blob:
# the traits most recently set, the event types and channels most recently seen (custom types
# beyond the cap are folded into "other", code 0). Older blobs are trimmed when next written.
MAX_TRAITS = 64
MAX_TYPES = 32
MAX_CHANNELS = 32
MAX_TRAIT_KEY = 64
MAX_TRAITS_BYTES = 4096  # all traits together, packed
# 32-bit: at window 16 a resent-looking false duplicate is one event in ~2.7e8 of a profile
# (redeliveries never rely on it: the per-partition offset marks catch those). The first bytes of
# the 5-byte digest schema 1 kept, so that a schema 1 ring converts by truncation.
FINGERPRINT_BYTES = 4
_FP_DIGEST = 5
RESCALE_EXPONENT = 40.0  # rescale once e^{λ(t−L)} would pass e^40 ≈ 2.4e17
DAY_MS = 86_400_000
#: Two purchases of one item by one profile less than this apart are one order (a cart line sent
#: twice), not a rebuy (models/reco/repurchase.py `min_gap_s`).
REBUY_MIN_GAP_S = 1800
_SESSIONS = SessionConfig()


@dataclass(frozen=True)
class AffinityConfig:
    """Settings of the affinity model (the `affinity:` block of config/kairos.yaml)."""

    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "page_view": 0.2,
            "item_view": 1.0,
            "search": 0.5,
            "click": 1.5,
            "add_to_cart": 3.0,
            "purchase": 5.0,
            "conversion": 2.0,
            "email_open": 0.0,  # opens are unreliable (image proxies, privacy protection)
            "email_click": 1.5,  # a click in a partner's mail: like a click on the site
        }
    )
    default_weight: float = 0.0  # custom event types unless listed in `weights`
    half_life_days: Mapping[str, float] = field(
        default_factory=lambda: {"category": 14.0, "brand": 14.0, "tag": 14.0, "item": 3.0}
    )
    ancestor_factor: float = 0.5  # "shoes/running" credits "shoes" with half the weight
    max_keys: Mapping[str, int] = field(
        default_factory=lambda: {"category": 12, "brand": 8, "tag": 8, "item": 10}
    )
    max_recent_items: int = 8
    max_cart: int = 20
    max_purchased: int = 10
    # event_ids remembered per profile, against client resends (redeliveries after a crash are
    # caught by the per-partition offset marks, however many)
    dedupe_window: int = 16

    def __post_init__(self) -> None:
        for dim in DIMENSIONS:
            if self.half_life_days.get(dim, 0) <= 0:
                raise ValueError(f"affinity.half_life_days.{dim} must be a positive number")
            if self.max_keys.get(dim, 0) < 1:
                raise ValueError(f"affinity.max_keys.{dim} must be at least 1")
        if not 0 <= self.ancestor_factor <= 1:
            raise ValueError("affinity.ancestor_factor must be between 0 and 1")
        if self.dedupe_window < 1:
            raise ValueError("affinity.dedupe_window must be at least 1")

    def rate(self, dim: str) -> float:
        """λ per second for a dimension."""
        return math.log(2) / (self.half_life_days[dim] * 86_400.0)

    @cached_property
    def rates(self) -> tuple[float, ...]:
        """λ per second of each dimension, in `DIMENSIONS` order (computed once)."""
        return tuple(self.rate(d) for d in DIMENSIONS)

    @cached_property
    def max_rate(self) -> float:
        return max(self.rates)

    @cached_property
    def caps(self) -> tuple[int, ...]:
        return tuple(int(self.max_keys[d]) for d in DIMENSIONS)

    def weight(self, event_type: str) -> float:
        return float(self.weights.get(event_type, self.default_weight))


def fingerprint(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=_FP_DIGEST).digest()[:FINGERPRINT_BYTES]


def _shared(prev: str, k: str) -> int:
    """The length of the prefix `k` shares with `prev`."""
    if k.startswith(prev):  # an ancestor path before its descendants
        return len(prev)
    n = 0
    # most share a few characters ("sku-", "shoes/"): compared in turn
    for a, b in zip(prev[:16], k, strict=False):
        if a != b:
            return n
        n += 1
    hi = min(len(prev), len(k))  # a long one: the rest by halving (startswith runs in C)
    while n < hi:
        mid = (n + hi + 1) // 2
        if k.startswith(prev[:mid]):
            n = mid
        else:
            hi = mid - 1
    return n


def _front(keys: list[str]) -> list[Any]:
    """Sorted strings -> [shared length, rest, shared length, rest, ...] (front coding)."""
    out: list[Any] = []
    prev = ""
    for k in keys:
        n = _shared(prev, k)
        out.append(n)
        out.append(k[n:])
        prev = k
    return out


def _refront(old_words: list[str], old_front: list[Any], words: list[str], added: set[str],
             gone: set[str]) -> list[Any]:
    """`_front(words)` from `_front(old_words)`, for `words` = `old_words` with `added` in and
    `gone` out (all sorted): an entry depends only on its word and the one before, so only the
    entries of the added words and of the words after an added or a removed one are coded
    again; the runs between are copied (a profile's table changes by a few strings at a time,
    and coding every entry again was most of `snapshot`'s time)."""
    end = len(words)
    dirty = set()
    for a in added:
        i = bisect_left(words, a)
        dirty.add(i)
        dirty.add(i + 1)
    for g in gone:
        dirty.add(bisect_left(words, g))
    out: list[Any] = []
    start = 0
    for d in sorted(dirty):
        if d >= end:
            break
        if d > start:  # words[start:d]: old words after the same words as before
            j = 2 * bisect_left(old_words, words[start])
            out += old_front[j : j + 2 * (d - start)]
        k = words[d]
        n = _shared(words[d - 1], k) if d else 0
        out.append(n)
        out.append(k[n:])
        start = d + 1
    if start < end:
        j = 2 * bisect_left(old_words, words[start])
        out += old_front[j : j + 2 * (end - start)]
    return out


_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,17})\Z").match


def _unfront(flat: list[Any]) -> list[str]:
    out: list[str] = []
    prev = ""
    it = iter(flat)
    for n, rest in zip(it, it, strict=False):
        prev = prev[:n] + rest
        out.append(prev)
    if len(flat) & 1:
        raise ValueError("front coding: a shared length without its rest")
    return out


_BIG_ENDIAN = sys.byteorder == "big"  # blobs are little-endian everywhere


def _string_table(names: set[str], old: list[Any] | None = None) -> list[Any]:
    """A profile's string table (schema 4): `[names in index order, their set, name -> index,
    the decimal ids packed, the other strings front-coded, those strings]`, the same for the
    same set. From `old` (the table before), only the strings added are classified, and its
    packed parts are reused where they did not change."""
    # a table read from a blob whose words are out of order (not one `snapshot` writes) is
    # made anew: its front coding cannot be updated in place
    if old is None or old[1] is None or old[5] != sorted(old[5]):
        numk = sorted(filter(_DECIMAL, names))  # "0", "1234"; not "007"
        words = sorted(names.difference(numk))
        nums, front = _pack_ints(list(map(int, numk))), _front(words)
    else:
        was = old[1]
        added = names.difference(was)
        gone = was.difference(names)
        old_words = old[5]
        old_numk = old[0][: len(old[0]) - len(old_words)]
        new_numk = list(filter(_DECIMAL, added))
        numk, words = old_numk, old_words
        if new_numk or gone:
            numk = sorted(set(old_numk).difference(gone).union(new_numk)) if gone else \
                sorted(old_numk + new_numk)
        new_words = added.difference(new_numk) if new_numk else added
        if new_words or gone:
            words = sorted(set(old_words).difference(gone).union(new_words)) if gone else \
                sorted(old_words + list(new_words))
        nums = old[3] if numk == old_numk else _pack_ints(list(map(int, numk)))
        front = old[4] if words == old_words else \
            _refront(old_words, old[4], words, new_words, gone)
    order = numk + words
    return [order, names, dict(zip(order, range(len(order)), strict=False)), nums, front, words]


def _same_table(table: list[Any], names: set[str]) -> bool:
    """Whether `table` (from `restore` or the last `snapshot`) holds exactly `names`; a table a
    blob brought in gets its set here, on its first use, and its index when it is reused."""
    order = table[0]
    if table[1] is None:
        seen = set(order)
        if len(seen) != len(order):  # a string twice: not a table `snapshot` writes
            table[0] = []
            return False
        table[1] = seen
    if table[1] != names:
        return False
    if table[2] is None:
        table[2] = dict(zip(order, range(len(order)), strict=False))
    return True


def _pack_ints(nums: list[int]) -> bytes:
    """Non-negative ints below 2^64 as one string: their width in bytes w (the widest's), then
    w planes, the k-th byte of every number in plane k (little-endian; b"" for none)."""
    if not nums:
        return b""
    w = max(1, (max(nums).bit_length() + 7) // 8)
    a = array("I" if w <= 4 else "Q", nums)
    if _BIG_ENDIAN:
        a.byteswap()
    raw = a.tobytes()
    s = a.itemsize
    return bytes((w,)) + b"".join([raw[j::s] for j in range(w)])


def _unpack_ints(b: bytes) -> list[int]:
    if not b:
        return []
    w = b[0]
    k, rest = divmod(len(b) - 1, w) if 1 <= w <= 8 else (0, 1)
    if rest or not k:
        raise ValueError(f"integer ids: {len(b)} bytes do not hold numbers of {w} bytes")
    s = 4 if w <= 4 else 8
    buf = bytearray(k * s)
    for j in range(w):
        buf[j::s] = b[1 + j * k : 1 + (j + 1) * k]
    a = array("I" if s == 4 else "Q")
    a.frombytes(buf)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tolist()


def _recs(n: int) -> struct.Struct:
    """The precompiled format of n affinity records (a one-byte head, a float32)."""
    s = _RECS.get(n)
    if s is None:
        s = struct.Struct("<" + "Bf" * n)
        if n <= 256:
            _RECS[n] = s
    return s


_RECS: dict[int, struct.Struct] = {}


def _escape(step: int, r: int, code: float, extra: list[int]) -> int:
    """A record's head when its step is past 6 or its code not 0-30: what does not fit goes to
    `extra` (the code, then the index)."""
    ok = 0 <= code <= 30
    if not ok:
        extra.append(int(code))
    if step > 6:
        extra.append(r)
    return (step if step <= 6 else 7) << 5 | (int(code) if ok else 31)


def _pack_aff(aff: list[dict[str, list[float]]], get: Any) -> tuple[bytes, list[int]]:
    """Schema 4's affinity records and their counts (see the module's docstring)."""
    flat: list[Any] = []
    counts: list[int] = []
    extra: list[int] = []
    for t in aff:
        if not t:
            counts += (0, 0)
            continue
        n0 = len(flat)
        recs = sorted(zip(map(get, t), t.values(), strict=True))  # by index (each index once)
        first = prev = recs[0][0]
        prev -= 1
        for r, pairs in recs:
            step = r - prev
            prev = r
            code = pairs[0]
            flat += (step << 5 | code if step <= 6 and 0 <= code <= 30 else
                     _escape(step, r, code, extra), pairs[1])
            if len(pairs) > 2:  # the key's other event types
                for j in range(2, len(pairs), 2):
                    code = pairs[j]
                    flat += (code if 0 <= code <= 30 else _escape(0, r, code, extra), pairs[j + 1])
        counts += ((len(flat) - n0) >> 1, first)
    return _recs(len(flat) >> 1).pack(*flat), counts + extra


def _unpack_aff(b: bytes, counts: list[int], names: list[str]) -> list[dict[str, list[float]]]:
    """Schema 4's affinity records back into the four tables (see the module's docstring)."""
    if len(counts) < 8 or min(counts[:8]) < 0:
        raise ValueError(f"affinities: {counts!r} are not 4 counts and first indexes")
    total = sum(counts[0:8:2])
    if len(b) != 5 * total:
        raise ValueError(f"affinities: {len(b)} bytes are not {total} records")
    it = iter(_recs(total).unpack(b))
    records = zip(it, it, strict=True)  # (head, value)
    extra = iter(counts[8:])
    aff: list[dict[str, list[float]]] = [{}, {}, {}, {}]
    for d, table in enumerate(aff):
        n, r = counts[2 * d], counts[2 * d + 1] - 1
        pairs: Any = None  # a record with step 0 continues the key before it
        for h, v in islice(records, n):
            step = h >> 5
            code = h & 31
            if code == 31:
                code = next(extra)
            if step:
                if step == 7:
                    r = next(extra)
                    if r < 0:
                        raise ValueError(f"affinities: index {r}")
                else:
                    r += step
                pairs = table[names[r]] = [code, v]
            else:
                pairs += (code, v)
    if next(extra, None) is not None:
        raise ValueError("affinities: more escapes than records")
    return aff



def _restored_session(sess: list[Any] | None, last: int, names: list[str]) -> Session:
    """The session of a schema 2-4 blob (times relative to `last`, items as string refs)."""
    if not sess:
        return Session()
    seq, key, start_ago, last_ago, events, viewed, carted, sbought, gap = sess
    return Session(seq, key, last - start_ago, last - last_ago, events,
                   [names[r] for r in viewed], [names[r] for r in carted],
                   [names[r] for r in sbought], float(gap))

@dataclass(slots=True)
class Profile:
    """One visitor's (or one known user's) state. Mutable; `snapshot()` gives its bytes."""

    landmark: int = 0  # seconds; 0 = not set yet
    event_count: int = 0
    first_seen: int = 0  # ms
    last_seen: int = 0  # ms
    user_id: str | None = None
    # per dimension: key -> [code, forward-decayed value, code, value, ...]
    aff: list[dict[str, list[float]]] = field(default_factory=lambda: [{}, {}, {}, {}])
    recent: list[str] = field(default_factory=list)  # newest first
    cart: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)  # newest first
    types: dict[Any, list[int]] = field(default_factory=dict)  # code or name -> [count, last_s]
    traits: dict[str, Any] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=dict)  # channel -> last seen (s)
    aliases: list[str] = field(default_factory=list)  # visitor ids linked to this profile
    seen: bytes = b""  # ring of event-id fingerprints, newest last
    # partition -> [offset, record time ms] of the last record applied from it: a record
    # redelivered after a crash is at or below its mark and is skipped, however many there are
    marks: dict[int, list[int]] = field(default_factory=dict)
    # identity merges this profile took in, [visitor id, the anonymous profile's revision],
    # newest last (streams/plan.py: a merge redone after a crash is not folded in twice)
    merged: list[list[Any]] = field(default_factory=list)
    # what the visitor is doing now (models/session.py), advanced by every applied event
    session: Session = field(default_factory=Session)
    # purchased item -> [last purchase, the one before (0: none)], in seconds; the items of
    # `purchased` only (the repurchase rule reads how long ago, the stream how long between)
    bought: dict[str, list[int]] = field(default_factory=dict)
    # the string table of the blob this profile was restored from or last written as (schema
    # 4): the next snapshot reuses it while the profile names the same strings
    _table: Any = field(default=None, repr=False, compare=False)
    # the affinity records and counts the last snapshot wrote, until `settle` reads them
    _packed: Any = field(default=None, repr=False, compare=False)

    # -- persistence -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Schema 4 (see the module's docstring)."""
        sess = self.session
        aff = self.aff
        names = set(self.recent)
        names.update(self.cart, self.purchased, self.bought, *aff)
        if sess.seq:
            names.update(sess.viewed, sess.carted, sess.bought)
        table = self._table
        if table is None or not _same_table(table, names):
            table = self._table = _string_table(names, table)
        ref, nums, front = table[2], table[3], table[4]
        get = ref.__getitem__
        recs, counts = _pack_aff(aff, get)
        self._packed = (recs, counts)
        last = self.last_seen
        ls = last // 1000
        return msgpack.packb(
            [
                SCHEMA_VERSION,
                self.landmark,
                self.event_count,
                last,
                last - self.first_seen,
                self.user_id,
                nums,
                front,
                counts,
                recs,
                list(map(get, self.recent)),
                list(map(get, self.cart)),
                list(map(get, self.purchased)),
                {k: [v[0], ls - v[1]] for k, v in self.types.items()},
                self.traits,
                self.segments,
                {k: ls - v for k, v in self.channels.items()},
                self.aliases,
                self.seen,
                {k: [o, last - ms] for k, (o, ms) in self.marks.items()},
                self.merged,
                [sess.seq, sess.key, last - sess.start_ms, last - sess.last_ms, sess.events,
                 list(map(get, sess.viewed)), list(map(get, sess.carted)),
                 list(map(get, sess.bought)), int(sess.return_gap_ms)] if sess.seq else None,
                {get(k): [ls - t1, t1 - t0 + 1 if t0 else 0] for k, (t1, t0) in self.bought.items()},
            ],
            use_bin_type=True,
            use_single_float=True,
        )

    def settle(self) -> None:
        """Make this profile what restoring its last `snapshot()` gives, without decoding the
        blob (call it right after the snapshot, before any change): the affinity tables in the
        blob's order with their float32 values (read back from the records just packed), the
        session's return gap in whole ms, the traits' floats as float32. A caller that carries
        on with the profile it has just written (streams/applier.py's plan ahead) then works
        on the same state as one that reads the blob back."""
        packed, self._packed = self._packed, None
        if packed is None:
            raise ValueError("settle() follows a snapshot()")
        self.aff = _unpack_aff(packed[0], packed[1], self._table[0])
        sess = self.session
        if not sess.seq:
            self.session = Session()  # a blob keeps no session before the first event
        else:
            sess.return_gap_ms = float(int(sess.return_gap_ms))
        if self.traits:
            self.traits = msgpack.unpackb(
                msgpack.packb(self.traits, use_bin_type=True, use_single_float=True),
                raw=False, strict_map_key=False)

    @classmethod
    def restore(cls, blob: bytes) -> Profile:
        """A profile from its blob, of any schema; ValueError for bytes that are not one."""
        try:
            data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack's errors for truncated, extra or malformed bytes
            raise ValueError(f"corrupt profile blob ({len(blob)} bytes): {exc}") from exc
        version = data[0] if isinstance(data, list) and data else None
        if version not in (1, 2, 3, SCHEMA_VERSION):
            raise ValueError(f"unknown profile schema {version!r}")
        try:
            if version == SCHEMA_VERSION:
                return cls._restore_v4(data)
            if version == 1:
                return cls._restore_v1(data)
            return cls._restore_v23(data)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
                StopIteration, struct.error) as exc:
            raise ValueError(f"corrupt profile blob (schema {version}): "
                             f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def _restore_v4(cls, data: list[Any]) -> Profile:
        (_, lm, n, last, first_ago, uid, nums_b, front, counts, aff_b, recent, cart, purchased,
         types, traits, segs, chans, aliases, seen, marks, merged, sess, bought) = data
        nums = _unpack_ints(nums_b)
        names = list(map(str, nums))
        names += _unfront(front)
        ls = last // 1000
        aff = _unpack_aff(aff_b, counts, names)
        session = _restored_session(sess, last, names)
        name = names.__getitem__
        p = cls(lm, n, last - first_ago, last, uid, aff, list(map(name, recent)),
                list(map(name, cart)), list(map(name, purchased)),
                {k: [v[0], ls - v[1]] for k, v in types.items()}, traits, segs,
                {k: ls - v for k, v in chans.items()}, aliases, seen,
                {k: [o, last - ago] for k, (o, ago) in marks.items()}, merged, session,
                {names[r]: [ls - a, ls - a - d + 1 if d else 0] for r, (a, d) in bought.items()})
        p._table = [names, None, None, nums_b, front, names[len(nums):]]  # the next snapshot reuses it if unchanged
        return p

    @classmethod
    def _restore_v23(cls, data: list[Any]) -> Profile:
        """A schema 2 or 3 blob (written before schema 4)."""
        (version, lm, n, last, first_ago, uid, nums, front, aff2, recent, cart, purchased, types,
         traits, segs, chans, aliases, seen, marks, merged, sess, bought) = data
        names = [str(k) for k in nums] + _unfront(front)
        ls = last // 1000
        if version == 2:
            aff = [{names[r]: v for r, v in zip(refs, vals, strict=True)} for refs, vals in aff2]
        else:
            aff = [{}, {}, {}, {}]
            for r, dc, v in struct.iter_unpack(_REC_WIDE if len(names) > 256 else _REC, aff2):
                table = aff[dc >> 6]
                name = names[r]
                pairs = table.get(name)
                if pairs is None:
                    table[name] = [dc & 63, v]
                else:
                    pairs += (dc & 63, v)
        session = _restored_session(sess, last, names)
        return cls(lm, n, last - first_ago, last, uid, aff, [names[r] for r in recent],
                   [names[r] for r in cart], [names[r] for r in purchased],
                   {k: [v[0], ls - v[1]] for k, v in types.items()}, traits, segs,
                   {k: ls - v for k, v in chans.items()}, aliases, seen,
                   {k: [o, last - ago] for k, (o, ago) in marks.items()}, merged, session,
                   {names[r]: [ls - a, ls - a - d + 1 if d else 0] for r, (a, d) in bought.items()})

    @classmethod
    def _restore_v1(cls, data: list[Any]) -> Profile:
        """A schema 1 blob (written before schema 2): its 5-byte fingerprints cut to 4."""
        (_, lm, n, first, last, uid, aff, recent, cart, purchased, types, traits, segs, chans,
         aliases, seen, marks, *rest) = data
        seen = b"".join(seen[i : i + FINGERPRINT_BYTES] for i in range(0, len(seen), _FP_DIGEST))
        return cls(lm, n, first, last, uid, aff, recent, cart, purchased, types, traits, segs,
                   chans, aliases, seen, marks, rest[0] if rest else [],
                   Session.unpack(rest[1]) if len(rest) > 1 else Session(),
                   rest[2] if len(rest) > 2 else {})

    # -- redelivery marks --------------------------------------------------------------
    def covers(self, partition: int, offset: int, record_ms: int) -> bool:
        m = self.marks.get(partition)
        return m is not None and offset <= m[0] and record_ms <= m[1]

    def advance(self, partition: int, offset: int, record_ms: int) -> None:
        m = self.marks.get(partition)
        if m is None:
            self.marks[partition] = [offset, record_ms]
        else:
            m[0] = max(m[0], offset)
            m[1] = max(m[1], record_ms)

    # -- dedupe ------------------------------------------------------------------------
    def has_seen(self, fp: bytes) -> bool:
        seen = self.seen
        i = seen.find(fp)  # in C; a hit must start on a fingerprint's boundary
        while i >= 0:
            if i % FINGERPRINT_BYTES == 0:
                return True
            i = seen.find(fp, i + 1)
        return False

    def mark_seen(self, fp: bytes, window: int) -> None:
        self.seen = (self.seen + fp)[-window * FINGERPRINT_BYTES :]


def _rescale(p: Profile, to_s: int, cfg: AffinityConfig) -> None:
    if p.landmark:
        for dim, table in zip(DIMENSIONS, p.aff, strict=True):
            f = math.exp(-cfg.rate(dim) * (to_s - p.landmark))
            for key, pairs in list(table.items()):
                for j in range(1, len(pairs), 2):
                    pairs[j] *= f
                if max(pairs[1::2]) < 1e-9:
                    del table[key]
    p.landmark = to_s


def _credit(
    table: dict[str, list[float]], key: str, code: int, amount: float, touched: set[str]
) -> None:
    touched.add(key)
    pairs = table.get(key)
    if pairs is None:
        table[key] = [code, amount]
        return
    for j in range(0, len(pairs), 2):
        if pairs[j] == code:
            pairs[j + 1] += amount
            return
    pairs.extend((code, amount))


def _total(pairs: list[float]) -> float:
    return sum(pairs[1::2])


def _rank(kv: tuple[float, str]) -> tuple[float, str]:
    return (-kv[0], kv[1])


def _prune(table: dict[str, list[float]], cap: int, touched: set[str]) -> None:
    """Drop the lowest keys beyond `cap`, never one the current event just credited:
    a new interest must be able to enter a full table (the forward-decay boost of later
    events then decides whether it stays). The lowest: by total, ties by key (the last of the
    ranking `view` shows)."""
    excess = len(table) - cap
    if excess <= 0:
        return
    old = [(sum(v[1::2]), k) for k, v in table.items() if k not in touched]
    if excess == 1 and old:
        del table[max(old, key=_rank)[1]]
        return
    old.sort(key=_rank)
    for _, k in old[max(0, len(old) - excess):]:
        del table[k]


#: What one event credits at most (a hostile event cannot make the profile's work unbounded):
#: its first `MAX_THINGS` items, an item's first `MAX_TAGS` tags and `MAX_CATEGORIES` category
#: paths, and of a path its leaf and the ancestors whose factor is still above
#: `MIN_ANCESTOR_FACTOR` (at most `MAX_DEPTH` levels).
MAX_THINGS = 50
MAX_TAGS = 16
MAX_CATEGORIES = 8
MAX_DEPTH = 12
MIN_ANCESTOR_FACTOR = 1e-4
_CHAINS: dict[str, list[str]] = {}


def _chain(path: str) -> list[str]:
    """The category path's nodes from the leaf up (lower case; at most `MAX_DEPTH`)."""
    chain = _CHAINS.get(path)
    if chain is None:
        if len(_CHAINS) > 50_000:
            _CHAINS.clear()
        chain = _CHAINS[path] = list(reversed(category_ancestors(path.lower())))[:MAX_DEPTH]
    return chain


def set_traits(traits: dict[str, Any], new: Mapping[Any, Any]) -> None:
    """Set at most 32 traits of one identify; the profile keeps the `MAX_TRAITS` most recently
    set (a trait set again counts as new), within `MAX_TRAITS_BYTES` packed."""
    for k, v in list(new.items())[:32]:
        key = str(k)[:MAX_TRAIT_KEY]
        traits.pop(key, None)
        traits[key] = v
    for key in list(traits)[: max(0, len(traits) - MAX_TRAITS)]:
        del traits[key]
    while len(traits) > 1 and len(msgpack.packb(traits, use_bin_type=True)) > MAX_TRAITS_BYTES:
        del traits[next(iter(traits))]


def bound_types(types: dict[Any, list[int]]) -> None:
    """At most `MAX_TYPES` entries: the custom types (name keys) seen longest ago are folded
    into "other" (code 0) with their counts; the standard types (int codes) are always kept."""
    while len(types) > MAX_TYPES:
        custom = [k for k in types if not isinstance(k, int)]
        if not custom:
            return
        oldest = min(custom, key=lambda k: (types[k][1], types[k][0], str(k)))
        cnt, last = types.pop(oldest)
        other = types.setdefault(0, [0, 0])
        other[0] += cnt
        other[1] = max(other[1], last)


def bound_channels(channels: dict[str, int]) -> None:
    """At most `MAX_CHANNELS` channels: the ones seen longest ago go."""
    if len(channels) > MAX_CHANNELS:
        keep = sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CHANNELS]
        channels.clear()
        channels.update(keep)


def _type_view(types: Mapping[Any, list[int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for k, (c, last) in types.items():
        name = CODE_NAMES.get(k, "other") if isinstance(k, int) else str(k)
        if (seen := out.get(name)) is not None:  # a custom type named "other", and code 0
            seen["count"] += c
            seen["last"] = max(seen["last"], last * 1000)
        else:
            out[name] = {"count": c, "last": last * 1000}
    return out


def _push_front(lst: list[str], value: str, cap: int) -> None:
    if value in lst:
        lst.remove(value)
    lst.insert(0, value)
    del lst[cap:]


def _item_credits(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    things: list[Mapping[str, Any]] = []
    if item := event.get("item"):
        things.append(item)
    things.extend(event.get("items") or ())
    return things


def apply_event(p: Profile, event: Mapping[str, Any], cfg: AffinityConfig) -> bool:
    """Apply one normalised event. Returns False (and changes nothing) for a duplicate."""
    fp = fingerprint(event["event_id"])
    if p.has_seen(fp):
        return False
    p.mark_seen(fp, cfg.dedupe_window)
    ts_ms = int(event["ts"])
    t = ts_ms // 1000
    etype = event["type"]
    code = TYPE_CODES.get(etype, 0)

    p.event_count += 1
    p.first_seen = ts_ms if not p.first_seen else min(p.first_seen, ts_ms)
    p.last_seen = max(p.last_seen, ts_ms)
    if uid := event.get("user_id"):
        p.user_id = uid
    tkey: Any = code if code else etype
    stat = p.types.get(tkey)
    if stat is None:
        p.types[tkey] = [1, t]
        bound_types(p.types)
    else:
        stat[0] += 1
        stat[1] = max(stat[1], t)
    if ch := event.get("channel"):
        p.channels[ch] = max(p.channels.get(ch, 0), t)
        bound_channels(p.channels)
    traits = (event.get("props") or {}).get("traits") if etype == "identify" else None
    if isinstance(traits, dict):
        set_traits(p.traits, traits)

    things = _item_credits(event)
    _update_lists(p, etype, event, things, cfg)
    p.session = advance_session(p.session if p.session.seq else None, event, _SESSIONS)

    w = cfg.weight(etype)
    if w and things:
        if not p.landmark:
            p.landmark = t
        if cfg.max_rate * (t - p.landmark) > RESCALE_EXPONENT:
            _rescale(p, t, cfg)
        touched: tuple[set[str], ...] = (set(), set(), set(), set())
        dt = t - p.landmark
        r_cat, r_brand, r_tag, r_item = cfg.rates
        b_cat, b_brand, b_tag, b_item = (w * math.exp(r_cat * dt), w * math.exp(r_brand * dt),
                                         w * math.exp(r_tag * dt), w * math.exp(r_item * dt))
        cat_t, brand_t, tag_t, item_t = p.aff
        af = cfg.ancestor_factor
        for thing in things[:MAX_THINGS]:
            item_t_key = thing.get("id")
            if item_t_key:
                _credit(item_t, item_t_key, code, b_item, touched[3])
            if brand := thing.get("brand"):
                _credit(brand_t, brand.lower(), code, b_brand, touched[1])
            for tag in (thing.get("tags") or ())[:MAX_TAGS]:
                _credit(tag_t, tag.lower(), code, b_tag, touched[2])
            for path in (thing.get("categories") or ())[:MAX_CATEGORIES]:
                factor = 1.0
                for node in _chain(path):
                    _credit(cat_t, node, code, b_cat * factor, touched[0])
                    factor *= af
                    if factor < MIN_ANCESTOR_FACTOR:
                        break
        for table, cap, keys in zip(p.aff, cfg.caps, touched, strict=True):
            if len(table) > cap:
                _prune(table, cap, keys)
    return True


def _update_lists(
    p: Profile, etype: str, event: Mapping[str, Any], things: list[Mapping[str, Any]], cfg: AffinityConfig
) -> None:
    ids = [th["id"] for th in things if th.get("id")]
    t_s = int(event["ts"]) // 1000
    if etype in ("item_view", "add_to_cart", "purchase", "click"):
        for iid in reversed(ids):
            _push_front(p.recent, iid, cfg.max_recent_items)
    if etype == "add_to_cart":
        for iid in ids:
            if iid not in p.cart:
                p.cart.append(iid)
        del p.cart[: max(0, len(p.cart) - cfg.max_cart)]
    elif etype == "remove_from_cart":
        p.cart = [i for i in p.cart if i not in ids]
    elif etype == "purchase":
        p.cart = [i for i in p.cart if i not in ids] if event.get("items") or event.get("item") else []
        for iid in ids:
            _push_front(p.purchased, iid, cfg.max_purchased)
            times = p.bought.get(iid)
            if times is None:
                p.bought[iid] = [t_s, 0]
            elif t_s - times[0] >= REBUY_MIN_GAP_S:
                times[1], times[0] = times[0], t_s
            # else the same order again: the first line's time stands
        if len(p.bought) > len(p.purchased):
            keep = set(p.purchased)
            p.bought = {i: v for i, v in p.bought.items() if i in keep}


def merge(into: Profile, other: Profile, cfg: AffinityConfig) -> None:
    """Fold `other` (an anonymous visitor's profile) into `into` (the known user's)."""
    if other.landmark:
        if not into.landmark:
            into.landmark = other.landmark
        lm = max(into.landmark, other.landmark)
        if into.landmark != lm:
            _rescale(into, lm, cfg)
        shift = {d: math.exp(-cfg.rate(d) * (lm - other.landmark)) for d in DIMENSIONS}
        for dim, dst, src in zip(DIMENSIONS, into.aff, other.aff, strict=True):
            for key, pairs in src.items():
                for j in range(0, len(pairs), 2):
                    _credit(dst, key, int(pairs[j]), pairs[j + 1] * shift[dim], set())
            _prune(dst, cfg.max_keys[dim], set())
    into.event_count += other.event_count
    if other.first_seen:
        into.first_seen = min(into.first_seen or other.first_seen, other.first_seen)
    into.last_seen = max(into.last_seen, other.last_seen)
    # the fresher profile's recent items come first
    newer, older = (other, into) if other.last_seen > into.last_seen else (into, other)
    into.recent = list(dict.fromkeys(newer.recent + older.recent))[: cfg.max_recent_items]
    into.purchased = list(dict.fromkeys(newer.purchased + older.purchased))[: cfg.max_purchased]
    into.cart = list(dict.fromkeys(into.cart + other.cart))[-cfg.max_cart :]
    for iid, (last, prev) in other.bought.items():
        mine = into.bought.get(iid)
        if mine is None or last > mine[0]:
            into.bought[iid] = [last, max(prev, mine[0]) if mine else prev]
    into.bought = {i: into.bought[i] for i in into.purchased if i in into.bought}
    if other.session.last_ms > into.session.last_ms:  # the fresher session is "now"
        into.session = Session.unpack(other.session.pack())
        # named anew under the profile it joined (`<pid>#<seq>` stays unique)
        into.session.seq = max(into.session.seq, other.session.seq) + 1
    for k, (cnt, last) in other.types.items():
        mine = into.types.setdefault(k, [0, 0])
        mine[0] += cnt
        mine[1] = max(mine[1], last)
    bound_types(into.types)
    for ch, last in other.channels.items():
        into.channels[ch] = max(into.channels.get(ch, 0), last)
    bound_channels(into.channels)
    into.traits = {**other.traits, **into.traits}  # the known user's win, and are kept first
    for key in list(into.traits)[: max(0, len(into.traits) - MAX_TRAITS)]:
        del into.traits[key]
    into.segments = sorted(set(into.segments) | set(other.segments))
    into.aliases = list(dict.fromkeys(into.aliases + other.aliases))[:32]
    for part, (off, ms) in other.marks.items():
        into.advance(int(part), off, ms)
    ring = other.seen + into.seen
    into.seen = ring[-cfg.dedupe_window * FINGERPRINT_BYTES :]


def current_scores(p: Profile, dim: str, now_ms: int, cfg: AffinityConfig) -> dict[str, float]:
    """Current decayed score per key of one dimension."""
    table = p.aff[_DIM_INDEX[dim]]
    if not table:
        return {}
    f = math.exp(-cfg.rate(dim) * (now_ms / 1000.0 - p.landmark))
    return {k: _total(v) * f for k, v in table.items()}


def view(
    p: Profile, now_ms: int, cfg: AffinityConfig, *, top: int = 10, explain: bool = False
) -> dict[str, Any]:
    """The profile as the API and the decision rules see it."""
    affinities: dict[str, list[dict[str, Any]]] = {}
    for dim, table in zip(DIMENSIONS, p.aff, strict=True):
        f = math.exp(-cfg.rate(dim) * (now_ms / 1000.0 - p.landmark)) if table else 0.0
        ranked = sorted(table.items(), key=lambda kv: (-_total(kv[1]), kv[0]))[:top]
        rows = []
        for key, pairs in ranked:
            row: dict[str, Any] = {"key": key, "score": _round(_total(pairs) * f)}
            if explain:
                row["by_type"] = {
                    CODE_NAMES.get(int(pairs[j]), "other"): _round(pairs[j + 1] * f)
                    for j in range(0, len(pairs), 2)
                }
            rows.append(row)
        affinities[dim] = rows
    types = _type_view(p.types)
    return {
        "user_id": p.user_id,
        "event_count": p.event_count,
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
        "affinities": affinities,
        "recent_items": list(p.recent),
        "cart": list(p.cart),
        "purchased": list(p.purchased),
        "session": p.session.view(now_ms, _SESSIONS) if p.session.seq else None,
        "types": types,
        "segments": list(p.segments),
        "traits": dict(p.traits),
        "channels": {k: v * 1000 for k, v in p.channels.items()},
        "linked_visitors": list(p.aliases),
    }


class _Affinities(Mapping[str, dict[str, float]]):
    """`{dim: {key: current score}}`, each dimension computed on first read."""

    __slots__ = ("_p", "_t", "_cfg", "_done")

    def __init__(self, p: Profile, t: float, cfg: AffinityConfig) -> None:
        self._p, self._t, self._cfg = p, t, cfg
        self._done: dict[str, dict[str, float]] = {}

    def __getitem__(self, dim: str) -> dict[str, float]:
        got = self._done.get(dim)
        if got is None:
            i = _DIM_INDEX[dim]  # KeyError for an unknown dimension, as a dict would
            table = self._p.aff[i]
            f = math.exp(-self._cfg.rates[i] * self._t) if table else 0.0
            got = self._done[dim] = {k: sum(v[1::2]) * f for k, v in table.items()}
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(DIMENSIONS)

    def __len__(self) -> int:
        return len(DIMENSIONS)


def rules_view(p: Profile, now_ms: int, cfg: AffinityConfig) -> dict[str, Any]:
    """The profile as rules see it, cheaply: affinities as `{dim: {key: current score}}`
    (no sorting, no rounding; a dimension is computed when a rule or template first reads it),
    the rest as in `view`. Evaluated for every profile a batch changes."""
    affinities = _Affinities(p, now_ms / 1000.0 - p.landmark, cfg)
    return {
        "user_id": p.user_id,
        "event_count": p.event_count,
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
        "affinities": affinities,
        "recent_items": p.recent,
        "cart": p.cart,
        "purchased": p.purchased,
        "types": _type_view(p.types),
        "segments": p.segments,
        "traits": p.traits,
        "channels": {k: v * 1000 for k, v in p.channels.items()},
        "linked_visitors": p.aliases,
    }


def _round(x: float) -> float:
    if x == 0:
        return 0.0
    return float(f"{x:.6g}")


def reference_scores(
    events: list[Mapping[str, Any]], now_ms: int, cfg: AffinityConfig, dim: str
) -> dict[str, float]:
    """Plain exponential-decay sums over every event, no landmark, no pruning, for tests."""
    out: dict[str, float] = {}
    seen: set[str] = set()
    lam = cfg.rate(dim)
    for ev in events:
        if ev["event_id"] in seen:
            continue
        seen.add(ev["event_id"])
        w = cfg.weight(ev["type"])
        if not w:
            continue
        decay = math.exp(-lam * (now_ms - ev["ts"] // 1000 * 1000) / 1000.0)
        for thing in _item_credits(ev)[:MAX_THINGS]:
            keys: list[tuple[str, float]] = []
            if dim == "item" and thing.get("id"):
                keys.append((thing["id"], 1.0))
            elif dim == "brand" and thing.get("brand"):
                keys.append((thing["brand"].lower(), 1.0))
            elif dim == "tag":
                keys.extend((t.lower(), 1.0) for t in (thing.get("tags") or ())[:MAX_TAGS])
            elif dim == "category":
                for path in (thing.get("categories") or ())[:MAX_CATEGORIES]:
                    chain = list(reversed(category_ancestors(path.lower())))[:MAX_DEPTH]
                    factor = 1.0
                    for node in chain:
                        keys.append((node, factor))
                        factor *= cfg.ancestor_factor
                        if factor < MIN_ANCESTOR_FACTOR:
                            break
            for key, factor in keys:
                out[key] = out.get(key, 0.0) + w * factor * decay
    return out
