"""The brand's templates and journeys: loaded from config/dm (hot-reloaded by the config hub),
each version saved in PostgreSQL before anything pins it, and rebuilt from the stored
documents when a send renders a pinned version (what was approved is what goes out, even
after the files change)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from engine.confighub import ConfigHub
from engine.db.dm import DmStore
from engine.logic.dm.config import DmConfig, load_dm
from engine.logic.dm.journeys import Journey, parse_journey_doc
from engine.logic.dm.templates import TemplateVersion, version_from_document

log = logging.getLogger("kairos.dm")

HUB_NAME = "dm"
CACHE = 256


def register(hub: ConfigHub) -> None:
    """Hot-reload config/dm with the other configuration."""
    hub.register(HUB_NAME, load_dm, ("dm",))


class Library:
    def __init__(self, hub: ConfigHub, store: DmStore) -> None:
        self.hub = hub
        self.store = store
        self._saved: int | None = None  # id() of the DmConfig whose versions are stored
        self._templates: OrderedDict[str, TemplateVersion] = OrderedDict()
        self._journeys: OrderedDict[str, tuple[Journey, list[str]]] = OrderedDict()

    @property
    def problems(self) -> list[str]:
        return self.hub.errors.get(HUB_NAME, [])

    async def current(self) -> DmConfig:
        """The loaded configuration, its versions stored (once per load)."""
        cfg = self.hub.get(HUB_NAME) or DmConfig()
        if self._saved != id(cfg):
            brand_doc = cfg.brand.document if cfg.brand else {}
            for tv in cfg.templates.values():
                await self.store.save_template_version(tv.version, tv.id, tv.document, brand_doc)
                self._remember_template(tv)
            for j in cfg.journeys.values():
                tvs = self.step_versions(cfg, j)
                if tvs is not None:
                    await self.store.save_journey_version(self.pinned(cfg, j), j.id, j.document, tvs)
            self._saved = id(cfg)
        return cfg

    @staticmethod
    def step_versions(cfg: DmConfig, journey: Journey) -> list[str] | None:
        try:
            return [cfg.templates[s.template].version for s in journey.steps]
        except KeyError:
            return None

    @staticmethod
    def pinned(cfg: DmConfig, journey: Journey) -> str:
        return journey.pinned_version(cfg.template_versions())

    def _remember_template(self, tv: TemplateVersion) -> None:
        self._templates[tv.version] = tv
        self._templates.move_to_end(tv.version)
        while len(self._templates) > CACHE:
            self._templates.popitem(last=False)

    async def template(self, version: str) -> TemplateVersion | None:
        """A pinned template version (from memory, else rebuilt from its stored documents)."""
        tv = self._templates.get(version)
        if tv is not None:
            return tv
        row = await self.store.template_version(version)
        if row is None:
            return None
        try:
            tv = version_from_document(row["document"], row["brand_document"])
        except ValueError as exc:
            log.error("stored template version %s no longer loads: %s", version[:12], exc)
            return None
        self._remember_template(tv)
        return tv

    async def journey(self, version: str) -> tuple[Journey, list[str]] | None:
        """A pinned journey version: the journey and its steps' template versions."""
        got = self._journeys.get(version)
        if got is not None:
            return got
        row = await self.store.journey_version(version)
        if row is None:
            return None
        journey, errors = parse_journey_doc(row["document"])
        if journey is None:
            log.error("stored journey version %s no longer loads: %s", version[:12], errors)
            return None
        got = (journey, list(row["templates"]))
        self._journeys[version] = got
        while len(self._journeys) > CACHE:
            self._journeys.popitem(last=False)
        return got

    async def templates_of(self, kind: str, version: str) -> list[TemplateVersion] | None:
        """The template versions a campaign pins: one (quick) or one per step (journey)."""
        if kind == "quick":
            tv = await self.template(version)
            return [tv] if tv is not None else None
        got = await self.journey(version)
        if got is None:
            return None
        out = [await self.template(v) for v in got[1]]
        return None if any(tv is None for tv in out) else [tv for tv in out if tv is not None]


def describe_template(tv: TemplateVersion) -> dict[str, Any]:
    return {"id": tv.id, "name": tv.name, "description": tv.description, "version": tv.version,
            "approval": tv.approval, "fields": [f.as_dict() for f in tv.fields.values()],
            "recommendations": tv.recommendation is not None}


def describe_journey(cfg: DmConfig, j: Journey) -> dict[str, Any]:
    return {"id": j.id, "name": j.name, "description": j.description,
            "version": Library.pinned(cfg, j) if Library.step_versions(cfg, j) else None,
            "steps": [{"index": s.index, "template": s.template,
                       "wait_after_s": int(s.wait_after.total_seconds())} for s in j.steps],
            "exit_events": [{"type": e.type, "category": e.category, "channel": e.channel}
                            for e in j.exit_events]}
