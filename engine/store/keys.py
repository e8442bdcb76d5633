"""Every Redis key Kairos writes, in one place.

A profile and everything about one visitor carry the profile id as a hash tag
(`{v:abc}` / `{u:42}`), so each per-event script touches one Redis Cluster slot. The
identity merge is the one step that touches two profiles (see README, "Scaling").
"""

from __future__ import annotations

from collections.abc import Callable


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


def workers(group_id: str) -> str:
    """Hash: worker id -> JSON of its own measurements, per consumer group (one deployment)."""
    return f"kx:workers:{group_id}"


def live_second(second: int) -> str:
    """Counters of one second (hash: t:<type>, c:<channel>, accepted, rejected, h:<hist>:<bucket>)."""
    return f"kx:s:{second}"


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
    return f"kst:{campaign_id}"


SEGMENT_SIZES = "ksg:sizes"  # hash: segment id -> live number of member profiles


def template(fn: Callable[[str], str]) -> str:
    """A key format with `%s` where the profile id goes (for server-side scripts)."""
    return fn("%s")


def activity(pid: str) -> str:
    """A profile's recent events (list of msgpack rows, newest first, short TTL)."""
    return f"kr:{{{pid}}}"


# -- catalog and recommendations ------------------------------------------------------------
# Global (not per visitor): item records, item-to-item neighbours and trending tables.


def catalog_item(item_id: str) -> str:
    """Hash of one catalog item: field `c` = the curated record (msgpack, from the catalog API
    or a feed), fields `e.<name>` = what events said about it (msgpack each; curated wins)."""
    return f"kci:{item_id}"


def neighbours(kind: str, item_id: str) -> str:
    """Sorted set of an item's co-occurring items (`kind`: `v` co-view, `b` co-buy), bounded.
    Kind `t` (next_item) is directed: the items visitors interacted with right after this one."""
    return f"kn:{kind}:{item_id}"


ITEM_POPULARITY = "knp"  # hash: item id -> how many co-view events it had (inverse weighting)


def trending(half_life: str, dim: str, epoch: int) -> str:
    """Sorted set of forward-decayed scores of one dimension (`item`, `category`, `brand`) for
    one half-life label and landmark epoch (see engine/logic/trending.py), bounded."""
    return f"ktr:{half_life}:{dim}:{epoch}"


def trending_in_category(half_life: str, category: str, epoch: int) -> str:
    """Sorted set of forward-decayed item scores within one category path (and its subtree)."""
    return f"ktc:{half_life}:{epoch}:{category}"


def cf_visitor(pid: str) -> str:
    """String: a profile's online-CF vector (streams/hooks/cf.py: the uint16 partition whose
    model learnt it, then little-endian float32 factors), same TTL as the profile."""
    return f"kcf:u:{pid}"


def cf_items(group_id: str, partition: int) -> str:
    """Hash of one events partition's online-CF item vectors: item id -> float32 factors + bias
    (per consumer group: the models of two deployments sharing a Redis are apart)."""
    return f"kcf:i:{group_id}:{partition}"


def cf_snapshot(group_id: str, partition: int) -> str:
    """String: the snapshot of one partition's online-CF model (models/reco/cf.py), so that the
    worker that gets the partition next resumes from it."""
    return f"kcf:s:{group_id}:{partition}"


WRITE_PROBE = "kx:probe"  # string with a short TTL: each API process's "can Redis still write?"


# -- privacy --------------------------------------------------------------------------------


def tombstone(pid: str) -> str:
    """String: the epoch ms at which this profile was erased (GDPR/CCPA), kept at least as
    long as the events topic's retention. The stream never applies a record older than it to
    the profile, so a redelivered or replayed event of an erased person brings nothing back."""
    return f"kt:{{{pid}}}"


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


def propensity(visitor_id: str) -> str:
    """String with a TTL: a visitor's latest purchase and exit propensity (msgpack
    `{purchase, exit, at}`), written by the learner; the visitor's own hash tag."""
    return f"kpr:{{{visitor_pid(visitor_id)}}}"
