"""Segments and campaigns: typed models and a loader that reports every problem with file:line.

``load_config(dir)`` reads ``dir/segments/*.yaml`` and ``dir/campaigns/*.yaml`` (one object per
file) with PyYAML's safe loader, validates them, compiles rules and templates once, and raises
``ConfigError`` listing every problem found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path as FsPath
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from engine.logic.common import Problem
from engine.logic.decisions.assign import CONTROL, arm_probabilities
from engine.logic.decisions.rules import (
    Now,
    Path,
    Rule,
    RuleError,
    as_ms,
    compile_rule,
    load_zone,
    parse_duration_ms,
    referenced_segments,
    uses_propensity,
)
from engine.logic.decisions.templates import CompiledTemplate, TemplateError, compile_template

MAX_FILE_BYTES = 1_000_000
MAX_SLOTS = 5  # variants one zone shows at once (a slot's marginal costs K**(slots-1) pmfs)
MAX_ARM_ID_CHARS = 52  # campaign id + variant id: a decision id is `<campaign>.<arm>.<10 chars>`
STATUSES = ("active", "paused", "draft")
STOP_AFTER = ("dismiss", "conversion", "click")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_ALWAYS: Rule = lambda profile, context, now: True  # noqa: E731

FieldError = RuleError  # a validation error carrying a path inside the document


class ConfigError(ValueError):
    """Configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    name: str
    description: str
    rule: Rule
    spec: Any
    source: str


@dataclass(frozen=True, slots=True)
class Schedule:
    start: datetime | None
    end: datetime | None
    timezone: ZoneInfo

    _start_ms: int | None = field(default=None, init=False, compare=False, repr=False)
    _end_ms: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:  # the bounds in epoch ms, once
        object.__setattr__(self, "_start_ms", None if self.start is None else as_ms(self.start))
        object.__setattr__(self, "_end_ms", None if self.end is None else as_ms(self.end))

    def contains(self, now: Now) -> bool:
        """Whether ``now`` is inside [start, end)."""
        ms = now if type(now) is int else as_ms(now)
        if self._start_ms is not None and ms < self._start_ms:
            return False
        return self._end_ms is None or ms < self._end_ms


@dataclass(frozen=True, slots=True)
class Caps:
    per_day: int | None = None
    per_session: int | None = None
    stop_after: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Goal:
    event: str
    window_ms: int


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """How a campaign picks among its variants: `fixed` (the hashed split by weight) or an
    offer bandit learnt from rewards — context-free (`thompson`, `epsilon_greedy`) or
    `contextual` (over the visitor's features); `params` are the bandit's constructor
    arguments (see engine/logic/decisions/policy.py)."""

    kind: str
    params: tuple[tuple[str, float], ...] = ()


FIXED = PolicySpec("fixed")


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: float
    template: CompiledTemplate


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    description: str
    status: str
    priority: int
    schedule: Schedule
    channels: frozenset[str] | None
    zones: tuple[str, ...]
    targeting: Rule
    targeting_spec: Any
    caps: Caps
    variants: tuple[Variant, ...]
    control_percent: float
    goal: Goal | None
    source: str
    policy: PolicySpec = FIXED
    slots: int = 1  # how many variants the zone shows at once (a learning policy ranks them)

    # computed once from the fields above (the decision path reads them on every call)
    arms: tuple[tuple[str, float], ...] = field(default=(), init=False, compare=False,
                                                repr=False)
    total_weight: float = field(default=0.0, init=False, compare=False, repr=False)
    learns: bool = field(default=False, init=False, compare=False, repr=False)
    contextual: bool = field(default=False, init=False, compare=False, repr=False)
    _by_id: Mapping[str, Variant] = field(default_factory=dict, init=False, compare=False,
                                          repr=False)

    def __post_init__(self) -> None:
        arms = tuple((v.id, v.weight) for v in self.variants)
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "total_weight", sum(w for _, w in arms))
        # whether a bandit picks the variant (the learner owns this campaign's model), and
        # whether it reads the visitor's features (engine/logic/decisions/features.py)
        object.__setattr__(self, "learns", self.policy.kind != "fixed")
        object.__setattr__(self, "contextual", self.policy.kind == "contextual")
        object.__setattr__(self, "_by_id", {v.id: v for v in self.variants})

    @property
    def weights(self) -> list[tuple[str, float]]:
        """``[(variant id, weight), ...]`` in config order."""
        return list(self.arms)

    def variant(self, variant_id: str) -> Variant | None:
        return self._by_id.get(variant_id)

    def arm_probabilities(self) -> dict[str, float]:
        """Configured probability of each arm (``"control"`` included when > 0)."""
        return arm_probabilities(self.weights, self.control_percent)


@dataclass(frozen=True, slots=True)
class Config:
    segments: Mapping[str, Segment]  # in dependency order
    campaigns: Mapping[str, Campaign]
    by_zone: Mapping[str, tuple[Campaign, ...]] = field(default_factory=dict)
    needs_propensity: bool = False  # a rule (or a contextual policy) reads the propensities
    # requested zones -> the segments a selection for them reads (`segments_for`)
    _reads: dict[tuple[str, ...], frozenset[str] | None] = field(
        default_factory=dict, compare=False, repr=False)
    _candidates: dict[tuple[str, ...], tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    def campaigns_with_goal(self, event_type: str) -> list[Campaign]:
        """Campaigns whose goal is ``event_type`` (the stream checks these for conversions)."""
        return [c for c in self.campaigns.values() if c.goal and c.goal.event == event_type]

    def evaluate_segments(
        self, profile: Mapping[str, Any], context: Mapping[str, Any], now: Now,
        only: frozenset[str] | None = None, into: dict[str, Any] | None = None,
    ) -> list[str]:
        """Live segment membership: configured segments re-evaluated, unknown stored ones kept.

        ``only``: evaluate just these configured segments (`segments_for`: what a selection
        reads; the others are left out of the list). ``into``: a copy of ``profile`` the
        caller owns, whose ``segments`` this sets (no other copy is made)."""
        stored = profile.get("segments")
        stored = [s for s in stored if isinstance(s, str)] if isinstance(stored, list) else []
        members = [s for s in stored if s not in self.segments]
        view = dict(profile) if into is None else into
        for seg_id, seg in self.segments.items():
            if only is not None and seg_id not in only:
                continue
            view["segments"] = members
            if seg.rule(view, context, now):
                members = members + [seg_id]
        view["segments"] = members
        return members

    def candidates(self, zones: tuple[str, ...]) -> tuple[str, ...]:
        """The ids of the campaigns that may fill ``zones`` (each once, in zone order), kept
        per distinct request of zones."""
        got = self._candidates.get(zones)
        if got is None:
            got = tuple(dict.fromkeys(c.id for z in zones for c in self.by_zone.get(z, ())))
            if len(self._candidates) >= 1024:  # any zones may be asked for: bounded
                self._candidates.clear()
            self._candidates[zones] = got
        return got

    def segments_for(self, zones: tuple[str, ...]) -> frozenset[str] | None:
        """The configured segments that a selection for ``zones`` can read: those its
        candidate campaigns' targeting names, with the segments their rules name in turn;
        None (all of them) when a candidate reads the whole list (a template's `segments`,
        a contextual policy's features). Kept per distinct request of zones."""
        got = self._reads.get(zones, False)
        if got is not False:
            return got  # type: ignore[return-value]
        wanted: set[str] | None = set()
        for zone in zones:
            for c in self.by_zone.get(zone, ()):
                if c.contextual or any("segments" in v.template.names for v in c.variants):
                    wanted = None
                    break
                assert wanted is not None
                wanted |= referenced_segments(c.targeting_spec)
            if wanted is None:
                break
        if wanted is not None:
            todo = list(wanted)
            while todo:
                seg = self.segments.get(todo.pop())
                for dep in referenced_segments(seg.spec) if seg is not None else ():
                    if dep not in wanted:
                        wanted.add(dep)
                        todo.append(dep)
        out = None if wanted is None else frozenset(wanted)
        if len(self._reads) >= 1024:  # any zones may be asked for: keep the memory bounded
            self._reads.clear()
        self._reads[zones] = out
        return out


# --- YAML with line numbers ----------------------------------------------------------------


def _node_lines(node: yaml.Node, path: Path, out: dict[Path, int], dups: list[tuple[Path, int]]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                dups.append((path + (key,), key_node.start_mark.line + 1))
            seen.add(key)
            out.setdefault(path + (key,), key_node.start_mark.line + 1)
            _node_lines(value_node, path + (key,), out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, path + (i,), out, dups)


def read_yaml(text: str) -> tuple[Any, dict[Path, int], list[tuple[Path, int]]]:
    """Parse one YAML document safely; returns (data, path -> line, duplicate keys)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        lines: dict[Path, int] = {}
        dups: list[tuple[Path, int]] = []
        _node_lines(node, (), lines, dups)
        return loader.construct_document(node), lines, dups
    finally:
        loader.dispose()


def _line_for(lines: Mapping[Path, int], path: Path) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


# --- field validation ---------------------------------------------------------------------


def _req(doc: Mapping[str, Any], key: str) -> Any:
    if key not in doc or doc[key] is None:
        raise FieldError((key,), "is required")
    return doc[key]


def _id(value: Any, path: Path) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise FieldError(path, "must be 1-64 characters of a-z, 0-9, '_' or '-'")
    return value


def _text(value: Any, path: Path, max_len: int = 1000) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        raise FieldError(path, f"must be a string of at most {max_len} characters")
    return value


def _int(value: Any, path: Path, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(path, "must be an integer")
    if minimum is not None and value < minimum:
        raise FieldError(path, f"must be >= {minimum}")
    return value


def _number(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(path, "must be a number")
    return float(value)


def _str_list(value: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise FieldError(path, "must be a non-empty list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise FieldError(path + (i,), "must be a non-empty string")
    return tuple(value)


def _instant(value: Any, path: Path, tz: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise FieldError(path, "must be an ISO date or date-time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise FieldError(path, "must be an ISO date or date-time")
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _schedule(value: Any) -> Schedule:
    if value is None:
        return Schedule(None, None, ZoneInfo("UTC"))
    if not isinstance(value, Mapping):
        raise FieldError(("schedule",), "must be a mapping with start, end, timezone")
    unknown = set(value) - {"start", "end", "timezone"}
    if unknown:
        raise FieldError(("schedule", str(sorted(unknown)[0])), "is not a known option")
    tz = load_zone(value.get("timezone", "UTC"), ("schedule", "timezone"))
    start = _instant(value.get("start"), ("schedule", "start"), tz)
    end = _instant(value.get("end"), ("schedule", "end"), tz)
    if start is not None and end is not None and end <= start:
        raise FieldError(("schedule", "end"), "must be after start")
    return Schedule(start, end, tz)


def _caps(value: Any) -> Caps:
    if value is None:
        return Caps()
    if not isinstance(value, Mapping):
        raise FieldError(("caps",), "must be a mapping")
    unknown = set(value) - {"per_day", "per_session", "stop_after"}
    if unknown:
        raise FieldError(("caps", str(sorted(unknown)[0])), "is not a known option")
    per_day = value.get("per_day")
    per_session = value.get("per_session")
    stop = value.get("stop_after", [])
    if not isinstance(stop, list) or any(s not in STOP_AFTER for s in stop):
        raise FieldError(("caps", "stop_after"), f"must be a list of {list(STOP_AFTER)}")
    return Caps(
        None if per_day is None else _int(per_day, ("caps", "per_day"), 1),
        None if per_session is None else _int(per_session, ("caps", "per_session"), 1),
        frozenset(stop),
    )


def _goal(value: Any) -> Goal | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"event", "window"}:
        raise FieldError(("goal",), "must be a mapping with event and window")
    event = value.get("event")
    if not isinstance(event, str) or not event:
        raise FieldError(("goal", "event"), "must be an event type")
    return Goal(event, parse_duration_ms(value.get("window", "7d"), ("goal", "window")))


def _variants(value: Any) -> tuple[Variant, ...]:
    if not isinstance(value, list) or not value:
        raise FieldError(("variants",), "must be a non-empty list")
    out: list[Variant] = []
    for i, raw in enumerate(value):
        path: Path = ("variants", i)
        if not isinstance(raw, Mapping):
            raise FieldError(path, "must be a mapping with id, weight, template")
        unknown = set(raw) - {"id", "weight", "template"}
        if unknown:
            raise FieldError(path + (str(sorted(unknown)[0]),), "is not a known option")
        vid = _id(raw.get("id"), path + ("id",))
        if vid == CONTROL:
            raise FieldError(path + ("id",), f"must not be {CONTROL!r} (reserved)")
        if any(v.id == vid for v in out):
            raise FieldError(path + ("id",), f"duplicates variant {vid!r}")
        weight = _number(raw.get("weight", 1), path + ("weight",))
        if weight <= 0:
            raise FieldError(path + ("weight",), "must be > 0")
        tpl = raw.get("template")
        if not isinstance(tpl, Mapping) or not tpl:
            raise FieldError(path + ("template",), "must be a mapping of fields (title, html, ...)")
        try:
            compiled = compile_template(tpl)
        except TemplateError as exc:
            raise FieldError(
                path + ("template", exc.field), f"line {exc.lineno} of the template: {exc.reason}"
            ) from None
        out.append(Variant(vid, weight, compiled))
    return tuple(out)


# --- documents ----------------------------------------------------------------------------

_SEGMENT_KEYS = {"id", "name", "description", "rule"}
_CAMPAIGN_KEYS = {
    "id", "name", "description", "status", "priority", "schedule", "channels", "zones",
    "targeting", "caps", "variants", "control_percent", "goal", "policy", "slots",
}  # fmt: skip

#: policy name -> {parameter: (minimum, maximum)}; the bandits' constructor arguments
POLICY_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "fixed": {},
    "thompson": {"alpha": (1e-6, 1e6), "beta": (1e-6, 1e6)},
    "epsilon_greedy": {"epsilon": (0.0, 1.0), "decay": (0.0, 1.0)},
    "contextual": {"epsilon": (0.0, 1.0), "temperature": (1e-3, 100.0),
                   "learning_rate": (1e-6, 10.0), "l2": (0.0, 10.0)},
}


def _policy(value: Any) -> PolicySpec:
    """`policy: thompson` or `policy: {type: epsilon_greedy, epsilon: 0.1}`."""
    if value is None:
        return FIXED
    names = list(POLICY_PARAMS)
    where: Path = ("policy",)
    if isinstance(value, str):
        value = {"type": value}
    elif isinstance(value, Mapping) and "type" in value:
        where = ("policy", "type")
    if not isinstance(value, Mapping):
        raise FieldError(where, f"must be one of {names} or a mapping with type")
    kind = value.get("type")
    if kind not in POLICY_PARAMS:
        raise FieldError(where, f"must be one of {names}")
    allowed = POLICY_PARAMS[kind]
    params: list[tuple[str, float]] = []
    for key, raw in value.items():
        if key == "type":
            continue
        if key not in allowed:
            known = sorted(allowed) or "none"
            raise FieldError(("policy", str(key)), f"is not an option of {kind} (options: {known})")
        num = _number(raw, ("policy", str(key)))
        lo, hi = allowed[key]
        if not lo <= num <= hi:
            raise FieldError(("policy", str(key)), f"must be between {lo:g} and {hi:g}")
        params.append((str(key), num))
    return PolicySpec(str(kind), tuple(sorted(params)))


def _run(errors: list[FieldError], fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except FieldError as exc:
        errors.append(exc)
        return None


def _unknown_keys(doc: Mapping[str, Any], allowed: set[str], errors: list[FieldError]) -> None:
    for key in doc:
        if key not in allowed:
            errors.append(
                FieldError((str(key),), f"is not a known field (expected {sorted(allowed)})")
            )


def parse_segment(doc: Mapping[str, Any], source: str) -> tuple[Segment | None, list[FieldError]]:
    """Validate one segment document."""
    errors: list[FieldError] = []
    _unknown_keys(doc, _SEGMENT_KEYS, errors)
    seg_id = _run(errors, lambda: _id(_req(doc, "id"), ("id",)))
    name = _run(errors, lambda: _text(doc.get("name", seg_id), ("name",), 200))
    desc = _run(errors, lambda: _text(doc.get("description"), ("description",)))
    rule = _run(errors, lambda: compile_rule(_req(doc, "rule"), ("rule",)))
    if errors:
        return None, errors
    return Segment(seg_id, name or seg_id, desc, rule, doc["rule"], source), []


def parse_campaign(doc: Mapping[str, Any], source: str) -> tuple[Campaign | None, list[FieldError]]:
    """Validate one campaign document."""
    errors: list[FieldError] = []
    _unknown_keys(doc, _CAMPAIGN_KEYS, errors)
    cid = _run(errors, lambda: _id(_req(doc, "id"), ("id",)))
    name = _run(errors, lambda: _text(doc.get("name", cid), ("name",), 200))
    desc = _run(errors, lambda: _text(doc.get("description"), ("description",)))

    def status() -> str:
        value = _req(doc, "status")
        if value not in STATUSES:
            raise FieldError(("status",), f"must be one of {list(STATUSES)}")
        return str(value)

    def control() -> float:
        pct = _number(doc.get("control_percent", 0), ("control_percent",))
        if not 0 <= pct < 100:
            raise FieldError(("control_percent",), "must be >= 0 and < 100")
        return pct

    def targeting() -> Rule:
        spec = doc.get("targeting")
        return _ALWAYS if spec is None else compile_rule(spec, ("targeting",))

    def channels() -> frozenset[str] | None:
        value = doc.get("channels")
        return None if value is None else frozenset(_str_list(value, ("channels",)))

    st = _run(errors, status)
    priority = _run(errors, lambda: _int(doc.get("priority", 0), ("priority",)))
    schedule = _run(errors, _schedule, doc.get("schedule"))
    chans = _run(errors, channels)
    zones = _run(errors, lambda: _str_list(_req(doc, "zones"), ("zones",)))
    rule = _run(errors, targeting)
    caps = _run(errors, _caps, doc.get("caps"))
    variants = _run(errors, lambda: _variants(_req(doc, "variants")))
    pct = _run(errors, control)
    goal = _run(errors, _goal, doc.get("goal"))
    policy = _run(errors, _policy, doc.get("policy"))
    slots = _run(errors, lambda: _int(doc.get("slots", 1), ("slots",), 1))
    if not errors and policy.kind != "fixed" and len(variants) < 2:
        errors.append(FieldError(("policy",), f"{policy.kind} needs at least two variants to "
                                 "choose between"))
    if slots is not None and slots > 1:
        if policy is not None and policy.kind == "fixed":
            errors.append(FieldError(("slots",), "more than one slot needs a learning policy "
                                     "(thompson, epsilon_greedy or contextual) to rank the "
                                     "variants"))
        elif variants is not None and slots > len(variants):
            errors.append(FieldError(("slots",), f"must be at most the number of variants "
                                     f"({len(variants)})"))
        elif slots > MAX_SLOTS:
            errors.append(FieldError(("slots",), f"must be at most {MAX_SLOTS}"))
    if not errors:
        for i, v in enumerate(variants):
            if len(cid) + max(len(v.id), len(CONTROL)) > MAX_ARM_ID_CHARS:
                errors.append(FieldError(
                    ("variants", i, "id"),
                    f"campaign id and variant id must together be at most {MAX_ARM_ID_CHARS} "
                    "characters (they travel in every decision_id)",
                ))
    if errors:
        return None, errors
    campaign = Campaign(
        cid, name or cid, desc, st, priority, schedule, chans, zones, rule,
        doc.get("targeting"), caps, variants, pct, goal, source, policy, slots,
    )  # fmt: skip
    return campaign, []


def _segment_order(segments: dict[str, Segment]) -> tuple[list[str], list[tuple[str, str]]]:
    """Topological order of segments; returns (order, [(segment, problem)])."""
    order: list[str] = []
    problems: list[tuple[str, str]] = []
    state: dict[str, int] = {}

    def visit(sid: str, stack: list[str]) -> None:
        if state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            problems.append((sid, "segment cycle: " + " -> ".join(stack + [sid])))
            return
        state[sid] = 1
        for dep in sorted(referenced_segments(segments[sid].spec)):
            if dep in segments:
                visit(dep, stack + [sid])
        state[sid] = 2
        order.append(sid)

    for sid in sorted(segments):
        visit(sid, [])
    return order, problems


def load_config(directory: str | FsPath) -> Config:
    """Load and validate ``segments/*.yaml`` and ``campaigns/*.yaml`` under ``directory``."""
    root = FsPath(directory)
    problems: list[Problem] = []
    segments: dict[str, Segment] = {}
    campaigns: dict[str, Campaign] = {}
    seg_refs: list[tuple[str, int, str, set[str]]] = []

    for kind in ("segments", "campaigns"):
        for file in sorted((root / kind).glob("*.yaml")) + sorted((root / kind).glob("*.yml")):
            name = str(file)
            try:
                raw = file.read_bytes()
                if len(raw) > MAX_FILE_BYTES:
                    problems.append(Problem(name, 1, f"file is larger than {MAX_FILE_BYTES} bytes"))
                    continue
                doc, lines, dups = read_yaml(raw.decode("utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(name, 1, f"cannot read: {exc}"))
                continue
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
                line = mark.line + 1 if mark is not None else 1
                reason = getattr(exc, "problem", None) or str(exc)
                problems.append(Problem(name, line, f"invalid YAML: {reason}"))
                continue
            for path, line in dups:
                problems.append(Problem(name, line, f"duplicate key {path[-1]!r}"))
            if not isinstance(doc, Mapping):
                problems.append(Problem(name, 1, f"must be a mapping describing one {kind[:-1]}"))
                continue
            parse = parse_segment if kind == "segments" else parse_campaign
            obj, errors = parse(doc, name)
            for err in errors:
                problems.append(Problem(name, _line_for(lines, err.path), str(err)))
            if obj is None:
                continue
            registry: dict[str, Any] = segments if kind == "segments" else campaigns
            if obj.id in registry:
                line = _line_for(lines, ("id",))
                problems.append(
                    Problem(
                        name, line, f"id {obj.id!r} is already used by {registry[obj.id].source}"
                    )
                )
                continue
            registry[obj.id] = obj
            spec = obj.spec if isinstance(obj, Segment) else obj.targeting_spec
            key = "rule" if isinstance(obj, Segment) else "targeting"
            seg_refs.append((name, _line_for(lines, (key,)), obj.id, referenced_segments(spec)))

    known_ids = set(segments)
    for name, line, _oid, refs in seg_refs:
        for ref in sorted(refs - known_ids):
            problems.append(Problem(name, line, f"unknown segment {ref!r}"))
    order, cycles = _segment_order(segments)
    for sid, message in cycles:
        problems.append(Problem(segments[sid].source, 1, message))
    if problems:
        raise ConfigError(problems)

    by_zone: dict[str, list[Campaign]] = {}
    for campaign in campaigns.values():
        for zone in campaign.zones:
            by_zone.setdefault(zone, []).append(campaign)
    return Config(
        segments={sid: segments[sid] for sid in order},
        campaigns=dict(sorted(campaigns.items())),
        by_zone={
            z: tuple(sorted(cs, key=lambda c: (-c.priority, c.id))) for z, cs in by_zone.items()
        },
        needs_propensity=any(uses_propensity(c.targeting_spec) or c.contextual
                             for c in campaigns.values())
        or any(uses_propensity(s.spec) for s in segments.values()),
    )
