"""The demo brand on a first start (`kairos up`): two partner stores of the example brand,
each with a user and a few contacts, in a group that the example journey and the quick-send
templates are released to, and a brand marketer. Idempotent; every start makes fresh
one-time sign-in links for the demo users (printed by `kairos up`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.logic.dm.contacts import check_contact

SEEDED = "dm_demo_seeded"
LINK_TTL = timedelta(hours=24)
BRAND_USER = "brand@northgate.example"
PARTNERS = [
    ("Northgate Manchester", "manchester@stores.northgate.example", [
        ("alice.hughes@example.com", "Alice", "Hughes", "demo-alice"),
        ("ben.okafor@example.com", "Ben", "Okafor", "demo-ben"),
        ("chloe.martin@example.com", "Chloe", "Martin", None),
    ]),
    ("Northgate Leeds", "leeds@stores.northgate.example", [
        ("dev.patel@example.com", "Dev", "Patel", "demo-dev"),
        ("emma.wright@example.com", "Emma", "Wright", None),
        ("finn.taylor@example.com", "Finn", "Taylor", None),
    ]),
]
GROUP = "All stores"
RELEASES = [("journey", "welcome"), ("template", "thank-you"), ("template", "meeting-follow-up"),
            ("template", "seasonal-picks")]


async def seed_demo(control: ControlPlane) -> dict[str, Any]:
    """Seed once; returns {"logins": [(who, email, one-time token), ...]} at every start."""
    store = DmStore(control.engine)
    if await control.get_secret(SEEDED) is None:
        if await control.user_by_email(BRAND_USER) is None:
            await control.add_user(BRAND_USER, "marketer", None)
        gid = (await store.group_by_name(GROUP) or {}).get("id") or await store.create_group(GROUP)
        for name, email, contacts in PARTNERS:
            user = await control.user_by_email(email)
            if user is None:
                pid = await control.create_partner(name)
                await control.add_user(email, "partner", None, partner_id=pid)
            else:
                pid = user.partner_id or await control.create_partner(name)
            await store.add_to_group(gid, pid)
            await store.add_contacts(pid, [check_contact({"email": e, "first_name": f, "last_name": la, "user_id": u})
                                           for e, f, la, u in contacts])
        for kind, subject in RELEASES:
            await store.release(kind, subject, by="kairos up", group_id=gid)
        await control.audit("kairos up", "dm.demo.seed", GROUP, detail={"partners": [p[0] for p in PARTNERS]})
        await control.set_secret(SEEDED, "1")
    logins = []
    for who, email in [("the brand (marketer)", BRAND_USER)] + [(p[0], p[1]) for p in PARTNERS]:
        user = await control.user_by_email(email)
        if user is not None and user.disabled_at is None:
            logins.append((who, email, await control.create_login_link(user.id, LINK_TTL)))
    return {"logins": logins}
