"""Every Redis key Kairos writes, in one place.

Two kinds of keys, told apart by their hash tag (the part in braces, which alone decides a
key's Redis Cluster slot):

- **per visitor**: a profile and everything about one visitor carry the profile id as their
  tag (`kp:{v:abc}`, `kr:{v:abc}`, `kt:{u:42}`), so one profile's commit touches one slot. The
  identity merge touches two profiles and runs as separate, idempotent steps (streams/plan.py).
- **shared** (tables that many visitors' events change: trending, neighbours, catalog items,
  campaign counters, segment sizes, per-second traffic): their tag is one of `SHARDS` shard
  names, `{k0}` … `{k15}`, chosen by `shard()` of the table's identity. A batch's writes to
  shared tables thus group into at most `SHARDS` slots, and each shard has a fence hash
  (`fence(shard, group)`) in the same slot, holding every partition's applied offset and owner
  epoch, which the stream commits in the same script as the shard's tables (exactly once,
  and a stale worker is refused).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

#: How many shard tags the shared tables are spread over (part of every shared key's name:
#: changing it moves every shared table). On a Redis Cluster the shared tables spread over at
#: most this many slots.
SHARDS = 16
_TAGS = tuple(f"{{k{n}}}" for n in range(SHARDS))


def shard(identity: str) -> int:
    """The shard of a shared table (or of an item's tables), from its identity: CRC-32 of the
    UTF-8 bytes modulo `SHARDS` (engine/store/lua/reco_read.lua has the Lua twin)."""
    return zlib.crc32(identity.encode()) % SHARDS


def shard_tag(n: int) -> str:
    return _TAGS[n]


def tag_of(key: str) -> str:
    """A key's hash tag (with its braces), or the whole key when it has none: two keys with the
    same answer share a Redis Cluster slot."""
    i = key.find("{")
    if i >= 0:
        j = key.find("}", i + 1)
        if j > i + 1:
            return key[i : j + 1]
    return key


def shard_of_key(key: str) -> int | None:
    """The shard number of a shared key (None for a per-visitor key)."""
    i = key.find("{k")
    if i < 0:
        return None
    j = key.find("}", i)
    digits = key[i + 2 : j]
    return int(digits) if digits.isdigit() else None


def visitor_pid(visitor_id: str) -> str:
    return f"v:{visitor_id}"


def user_pid(user_id: str) -> str:
    return f"u:{user_id}"


def profile(pid: str) -> str:
    """The profile blob: 4-byte revision + msgpack snapshot."""
    return f"kp:{{{pid}}}"


def visitor_profiles(visitor_glob: str) -> str:
    """A SCAN pattern matching the profiles of the visitors whose id matches the glob."""
    return profile(visitor_pid(visitor_glob))


def family(key: bytes | str) -> str:
    """A key's family, the part before its first colon (`kp` profiles, `ka` aliases, `kx` live
    counters, ...): what memory breakdowns group by."""
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    return text.split(":", 1)[0]


def is_profile(key: bytes | str) -> bool:
    return family(key) == "kp"


def alias(visitor_id: str) -> str:
    """Which profile an identified visitor now belongs to (value: a pid)."""
    return f"ka:{{{visitor_pid(visitor_id)}}}"


def tombstone(pid: str) -> str:
    """Set by the privacy erase flow for an erased profile, with a TTL at least the events
    topic's retention: while it exists the stream writes nothing for that profile (nor its
    per-visitor keys) and learns nothing from its events (checked inside the commit)."""
    return f"kt:{{{pid}}}"


def workers(group_id: str) -> str:
    """Hash: worker id -> JSON of its own measurements, per consumer group (one deployment)."""
    return f"kx:workers:{group_id}"


def live_second(second: int) -> str:
    """Counters of one second (hash: t:<type>, c:<channel>, accepted, rejected, h:<hist>:<bucket>)."""
    return f"kx:s:{_TAGS[second % SHARDS]}:{second}"


def fence(n: int, group_id: str) -> str:
    """Hash of shard `n`'s stream bookkeeping for one consumer group: per partition `p`, field
    `o<p>` = the offset of the last record whose changes to this shard's tables are applied,
    `e<p>` = the epoch of the worker that owns the partition (bumped by each new owner: a
    commit from an older epoch is refused), and in the partition's home shard
    (`home_shard(p)`) `a<p>` = the offset of the last record applied in full (where a worker
    resumes when Redis is behind the broker's committed offset)."""
    return f"km:{_TAGS[n]}:{group_id}"


def home_shard(partition: int) -> int:
    return partition % SHARDS


# -- decisions ------------------------------------------------------------------------------
# Per visitor (same hash tag as the profile): the campaign state the decision path reads
# with the profile in one round trip.


def campaign_state(pid: str) -> str:
    """Hash of one profile's campaign state; fields `<campaign>:<name>` with names `arm`,
    `at` (first decision, epoch ms), `day` + `today` (impressions on that day, campaign time
    zone), `dismissed`, `clicked`, `converted`."""
    return f"kc:{{{pid}}}"


def campaign_session(pid: str) -> str:
    """Hash campaign -> impressions in the current session; expires 30 min after the
    visitor's last event (every applied event slides it)."""
    return f"kcs:{{{pid}}}"


def campaign_stats(campaign_id: str) -> str:
    """Hash of a campaign's counters: fields `<arm>:<counter>` (assigned, impressions, …)."""
    return f"kst:{_TAGS[shard(campaign_id)]}:{campaign_id}"


SEGMENT_SIZES = f"ksg:{_TAGS[0]}:sizes"  # hash: segment id -> live number of member profiles


def template(fn: Callable[[str], str]) -> str:
    """A key format with `%s` where the profile id goes (for server-side scripts)."""
    return fn("%s")


def activity(pid: str) -> str:
    """A profile's recent events (list of msgpack rows, newest first, short TTL)."""
    return f"kr:{{{pid}}}"


# -- catalog and recommendations ------------------------------------------------------------
# Global (not per visitor): item records, item-to-item neighbours and trending tables. An
# item's keys share the item's shard.


def catalog_item(item_id: str) -> str:
    """Hash of one catalog item: field `c` = the curated record (msgpack, from the catalog API
    or a feed), fields `e.<name>` = what events said about it (msgpack each; curated wins).
    An item only events mention expires `ITEM_TTL_MS` after the last one; a curated one stays."""
    return f"kci:{_TAGS[shard(item_id)]}:{item_id}"


#: The unit of the neighbour tables' scores: a pair at distance d (weight 1/d, models/reco)
#: adds `NEIGHBOUR_UNIT // d`, an integer for every window up to 10 (2520 = lcm(1..10)), so the
#: sums stay exact integers. A small sorted set (a listpack, up to 128 members) keeps an integer
#: score as an integer, a fraction as its 17-digit text: incrementing a member of a ~110-member
#: table costs ~40 % less (no text to parse at each member passed) and the table takes about
#: half the memory. Readers divide by it (engine/store/reco_read.py).
NEIGHBOUR_UNIT = 2520


def neighbours(kind: str, item_id: str) -> str:
    """Sorted set of an item's co-occurring items (`kind`: `v` co-view, `b` co-buy), bounded,
    expiring `ITEM_TTL_MS` after its last change, scored in `NEIGHBOUR_UNIT`s. Kind `t`
    (next_item) is directed: the items visitors interacted with right after this one."""
    return f"kn:{_TAGS[shard(item_id)]}:{kind}:{item_id}"


def popularity(n: int) -> str:
    """Sorted set of shard `n`'s items by how many co-view events they had (the neighbours'
    inverse weighting at read time), bounded: an item's counter is in `popularity(shard(id))`."""
    return f"knp:{_TAGS[n]}"


def trending(half_life: str, dim: str, epoch: int) -> str:
    """Sorted set of forward-decayed scores of one dimension (`item`, `category`, `brand`) for
    one half-life label and landmark epoch (see engine/logic/trending.py), bounded."""
    return f"ktr:{_TAGS[shard(f'{half_life}:{dim}:{epoch}')]}:{half_life}:{dim}:{epoch}"


def trending_in_category(half_life: str, category: str, epoch: int) -> str:
    """Sorted set of forward-decayed item scores within one category path (and its subtree)."""
    return f"ktc:{_TAGS[shard(category)]}:{half_life}:{epoch}:{category}"


def repurchase_level(level: str) -> str:
    """Hash of the repurchase counters of one category level (`*`, the root over every purchase,
    or a category path): field `i` = the counter row's entry `i` (models/reco/repurchase.py
    `ROW`: purchases, rebuys, per delay bin its count and its sum of log delays x 1000), written
    by streams/hooks/reco.py, expiring a year after the level's last purchase."""
    return f"krl:{_TAGS[shard(level)]}:{level}"


def repurchase_item(item_id: str) -> str:
    """Hash of one item's repurchase counters (as `repurchase_level`), expiring 180 days after
    its last purchase; shares the item's shard."""
    return f"kri:{_TAGS[shard(item_id)]}:{item_id}"


def item_tables(item_id: str) -> tuple[str, str, str, str, str, str]:
    """The keys of one item's tables the stream changes per event, with one shard computation:
    `neighbours` v, b and t, `catalog_item`, `popularity` of its shard, `session_index`."""
    n = shard(item_id)
    tag = _TAGS[n]
    return (f"kn:{tag}:v:{item_id}", f"kn:{tag}:b:{item_id}", f"kn:{tag}:t:{item_id}",
            f"kci:{tag}:{item_id}", popularity(n), f"ksi:{tag}:{item_id}")


def session_index(item_id: str) -> str:
    """Sorted set of the sessions (`models.session.shared_session_name`: a hash of
    `<profile id>#<seq>`, no visitor id) that held an item, scored by their last
    time, bounded to the most recent (models/reco/sessionknn.py `sessions_per_item`), expiring
    with the sessions; shares the item's shard."""
    return f"ksi:{_TAGS[shard(item_id)]}:{item_id}"


_HEX = frozenset("0123456789abcdefABCDEF")


def session_shard(session_uid: str) -> int:
    """The shard of a session's items: its name is already a hash (16 hex digits,
    `models.session.shared_session_name`), so its first 8 digits modulo `SHARDS`, which the
    session-kNN script (engine/store/lua/session_knn.lua) reads for up to 200 sessions a
    request without a CRC in Lua; any other name: `shard`."""
    head = session_uid[:8]
    if len(head) == 8 and all(c in _HEX for c in head):
        return int(head, 16) % SHARDS
    return shard(session_uid)


def session_items(session_uid: str) -> str:
    """Sorted set of one session's distinct items scored by when it last met each (so oldest
    first is its order), bounded to its last `max_session_items`, expiring 2 days after its last
    event. Shared (many readers), sharded by the session's name (`session_shard`)."""
    return f"kss:{_TAGS[session_shard(session_uid)]}:{session_uid}"


def cf_visitor(pid: str) -> str:
    """String: a profile's online-CF vector (streams/hooks/cf.py: the uint16 partition whose
    model learnt it, then little-endian float32 factors), same TTL as the profile."""
    return f"kcf:u:{{{pid}}}"


def cf_items(group_id: str, partition: int) -> str:
    """Hash of one events partition's online-CF item vectors: item id -> float32 factors + bias
    (per consumer group: the models of two deployments sharing a Redis are apart). In the
    partition's home shard; bounded by the model's item cap."""
    return f"kcf:i:{_TAGS[home_shard(partition)]}:{group_id}:{partition}"


def cf_snapshot(group_id: str, partition: int) -> str:
    """String: the snapshot of one partition's online-CF model (models/reco/cf.py), so that the
    worker that gets the partition next resumes from it (home shard, written under its fence)."""
    return f"kcf:s:{_TAGS[home_shard(partition)]}:{group_id}:{partition}"


WRITE_PROBE = "kx:probe"  # string with a short TTL: each API process's "can Redis still write?"


# -- the learning loop ------------------------------------------------------------------------
# One deployment's (consumer group's) learning state shares the hash tag `{kb:<group>}`, so the
# learner's commit script touches one Redis Cluster slot.


def _learning(group_id: str) -> str:
    return f"kb:{{kb:{group_id}}}"


def model_versions(group_id: str) -> str:
    """Hash: model name (a campaign id) -> version of its published bytes (bumps on publish)."""
    return f"{_learning(group_id)}:versions"


def model(group_id: str, name: str) -> str:
    """String: the published bytes of one model (models/bandit `snapshot()`)."""
    return f"{_learning(group_id)}:m:{name}"


def learner_snapshot(group_id: str) -> str:
    """String: the learner's whole state with its consumer offsets (streams/learner.py)."""
    return f"{_learning(group_id)}:snapshot"


def learner_lease(group_id: str) -> str:
    """String with a TTL: the token of the one learner that may write (a lease)."""
    return f"{_learning(group_id)}:lease"


def learning_log(group_id: str, name: str) -> str:
    """List: one model's joined (decision, reward) rows, msgpack each, oldest first, capped."""
    return f"{_learning(group_id)}:log:{name}"


def learner_stats(group_id: str) -> str:
    """Hash: the learner's counters (decisions, rewards, defaulted, …) as of its last commit."""
    return f"{_learning(group_id)}:stats"


def drift_events(group_id: str) -> str:
    """List: the learner's drift detections as events, JSON `{at, model, detections}` each,
    oldest first, capped (written by lua/learner_commit.lua when a drift counter rises)."""
    return f"{_learning(group_id)}:drift"


def propensity(visitor_id: str) -> str:
    """String with a TTL: a visitor's latest purchase and exit propensity (msgpack
    `{purchase, exit, at}`), written by the learner; the visitor's own hash tag."""
    return f"kpr:{{{visitor_pid(visitor_id)}}}"
