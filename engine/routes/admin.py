"""The admin pages (role admin): GET /admin (keys and users), POST /admin/keys (create),
POST /admin/keys/{prefix}/revoke, POST /admin/users (add, with a one-time sign-in link),
POST /admin/password (the signed-in user's own password), GET /admin/audit (the audit log).

A new key is shown once, on the page that made it; the store keeps only its digest."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.db.control import Conflict
from engine.logic import passwords
from engine.logic.access import SECRET_SCOPES, Role
from engine.routes import client_ip, page, principal, svc


async def _admin_page(request: Request, status: int = 200, **extra: Any) -> Response:
    s = svc(request)
    return page(request, "admin.html", status, keys=await s.admin.keys(),
                users=await s.admin.users(), scopes=sorted(SECRET_SCOPES),
                roles=[r.value for r in Role], **extra)


def _flash(kind: str, text: str) -> list[dict[str, str]]:
    return [{"kind": kind, "text": text}]


async def get_admin(request: Request) -> Response:
    return await _admin_page(request)


async def post_key(request: Request) -> Response:
    s = svc(request)
    form = await request.form(max_files=0, max_fields=64, max_part_size=8192)
    kind = str(form.get("kind", ""))
    origins = [o.strip() for o in str(form.get("origins", "")).replace("\n", ",").split(",")
               if o.strip()]
    scopes = [str(v) for v in form.getlist("scope")]
    try:
        rec, plain = await s.admin.create_key(principal(request), kind,
                                              name=str(form.get("name", "")), scopes=scopes,
                                              origins=origins, ip=client_ip(request))
    except ValueError as exc:
        return await _admin_page(request, 422, messages=_flash("bad", f"Not created: {exc}"))
    return await _admin_page(request, 201, new_key={"kind": rec.kind, "plain": plain},
                             messages=_flash("good", f"Created {rec.kind} key {rec.id}…"))


async def post_revoke(request: Request) -> Response:
    s = svc(request)
    rec = await s.admin.revoke_key(principal(request), request.path_params["prefix"],
                                   ip=client_ip(request))
    if rec is None:
        return await _admin_page(request, 404, messages=_flash("bad", "No such key."))
    return await _admin_page(request, messages=_flash(
        "good", f"Revoked {rec.id}…: every API process refuses it within seconds."))


async def post_user(request: Request) -> Response:
    s = svc(request)
    form = await request.form(max_files=0, max_fields=16, max_part_size=4096)
    try:
        user, token = await s.admin.add_user(
            principal(request), str(form.get("email", "")), str(form.get("role", "")),
            str(form.get("partner_id", "")).strip() or None, ip=client_ip(request))
    except (ValueError, Conflict) as exc:
        return await _admin_page(request, 422, messages=_flash("bad", f"Not added: {exc}"))
    link = {"email": user.email, "url": f"{s.settings.base_url}/login/once/{token}"}
    return await _admin_page(request, 201, login_link=link,
                             messages=_flash("good", f"Added {user.role} {user.email}."))


async def post_password(request: Request) -> Response:
    s = svc(request)
    form = await request.form(max_files=0, max_fields=8, max_part_size=2048)
    try:
        await s.admin.set_password(principal(request), str(form.get("password", "")),
                                   ip=client_ip(request))
    except (ValueError, passwords.PasswordError) as exc:
        return await _admin_page(request, 422, messages=_flash("bad", f"Not changed: the password {exc}"))
    resp = RedirectResponse("/login", 303)  # a new password ends every session of the user
    resp.delete_cookie(s.session_cookie, path="/")
    return resp


async def get_audit(request: Request) -> Response:
    s = svc(request)
    try:
        before = int(request.query_params["before"]) if "before" in request.query_params else None
    except ValueError:
        before = None
    entries = await s.admin.audit(limit=100, before=before)
    older = entries[-1]["id"] if len(entries) == 100 else None
    return page(request, "audit.html", entries=entries, older=older)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin", get_admin, methods=["GET"]),
        Route("/admin/keys", post_key, methods=["POST"]),
        Route("/admin/keys/{prefix}/revoke", post_revoke, methods=["POST"]),
        Route("/admin/users", post_user, methods=["POST"]),
        Route("/admin/password", post_password, methods=["POST"]),
        Route("/admin/audit", get_audit, methods=["GET"]),
    ]
