"""What a template sees of one recipient: the contact's data, the partner's, the values
(campaign, then member), and for templates that ask, the contact's current recommendations
(from their linked profile, through the recommendation flow and its recipes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin

from engine.logic.dm.sending import Partner, Recipient, contact_visitor
from engine.logic.dm.templates import TemplateVersion

log = logging.getLogger("kairos.dm")


def values_for(tv: TemplateVersion, campaign_values: Mapping[str, Any] | None,
               member_values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The partner's values for one template: the campaign's, then the member's over them."""
    out = dict((campaign_values or {}).get(tv.id) or {})
    out.update((member_values or {}).get(tv.id) or {})
    return out


def recipient(contact: Mapping[str, Any] | None, to_email: str) -> Recipient:
    if contact is None:
        return Recipient(to_email, "", {"email": to_email})
    data = {**dict(contact.get("attributes") or {}), "first_name": contact.get("first_name") or "",
            "last_name": contact.get("last_name") or "", "email": to_email}
    name = " ".join(x for x in (contact.get("first_name"), contact.get("last_name")) if x)
    return Recipient(to_email, name, data)


def partner_of(name: str, email: str = "") -> Partner:
    return Partner(name, email, {"name": name, "email": email})


class Personaliser:
    """Per-recipient recommendations for templates that place them."""

    def __init__(self, recommender: Any | None, recipes: Callable[[], Mapping[str, Any] | None],
                 base_url: str, clock: Callable[[], float] = time.time) -> None:
        self.recommender = recommender
        self.recipes = recipes
        self.base_url = base_url
        self.clock = clock

    async def items(self, tv: TemplateVersion, contact: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        return (await self.items_many(tv, [contact]))[0]

    async def items_many(self, tv: TemplateVersion, contacts: Sequence[Mapping[str, Any] | None]
                         ) -> list[list[dict[str, Any]]]:
        """Each contact's items, read together (the recommender pipelines the profiles and
        the tables of all of them); [] each when the template asks for none."""
        want = tv.recommendation
        if want is None or self.recommender is None or not contacts:
            return [[] for _ in contacts]
        recipe = (self.recipes() or {}).get(want.recipe)
        if recipe is None:
            return [[] for _ in contacts]
        visitors = [None if c is None else c.get("user_id") or contact_visitor(str(c["id"]), c.get("visitor_id"))
                    for c in contacts]
        try:
            found = await self.recommender.recommend_many(recipe, visitors, want.n, int(self.clock() * 1000))
        except Exception as exc:  # no recommendations is better than no mail
            log.warning("recommendations for %d mails failed: %s", len(contacts), exc)
            return [[] for _ in contacts]
        base = tv.brand.website or self.base_url
        return [_items(rows, base) for rows in found]


def _items(rows: Sequence[Mapping[str, Any]], base: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        url = r.get("url")
        if not isinstance(url, str) or not url:
            continue
        image = r.get("image")
        out.append({"id": r["id"], "name": r.get("name") or r["id"], "url": urljoin(base, url),
                    "image_url": urljoin(base, image) if isinstance(image, str) and image else None,
                    "price": r.get("price"), "currency": r.get("currency"),
                    "categories": list(r.get("categories") or []), "brand": r.get("brand")})
    return out
