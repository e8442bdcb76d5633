"""A partner's contacts: one contact checked, a CSV import with a report per row, and what a
campaign's status is. Pure: text in, plain data out.

A CSV has a header row; ``email`` is required, ``first_name``, ``last_name``, ``visitor_id``
and ``user_id`` are optional, and any other column becomes an attribute (what templates see as
``contact.<column>``). Each row is accepted or refused on its own, with a reason: ``bad
email``, ``duplicate`` (in the file, or a contact the partner has already: the store says
which), a too-long value.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.logic.dm.sending import normalise_email, suppression_key

MAX_IMPORT_ROWS = 10_000
MAX_IMPORT_BYTES = 4 * 1024 * 1024
MAX_VALUE = 200
MAX_ATTRIBUTES = 20
KNOWN = ("email", "first_name", "last_name", "visitor_id", "user_id")
_COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ContactError(ValueError):
    """A contact's field is wrong; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RowReport:
    row: int  # 1-based, the header is row 1
    email: str
    status: str  # added | duplicate | bad email | error
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "email": self.email, "status": self.status, "reason": self.reason}


@dataclass
class ImportPlan:
    contacts: list[dict[str, Any]] = field(default_factory=list)  # rows to insert, with "row"
    report: list[RowReport] = field(default_factory=list)


def check_contact(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One contact as stored (email, email_key, names, attributes, ids); ContactError."""
    email = normalise_email(raw.get("email"))
    if email is None:
        raise ContactError("email", "is not a valid e-mail address")
    out: dict[str, Any] = {"email": email, "email_key": suppression_key(email)}
    for name in ("first_name", "last_name"):
        value = raw.get(name) or ""
        if not isinstance(value, str) or len(value) > MAX_VALUE or _CONTROL.search(value):
            raise ContactError(name, f"must be text of at most {MAX_VALUE} characters")
        out[name] = value.strip()
    for name in ("visitor_id", "user_id"):
        value = raw.get(name) or None
        if value is not None and (not isinstance(value, str) or not _ID_RE.match(value)):
            raise ContactError(name, "must be 1-128 characters of letters, digits and _.:@-")
        out[name] = value
    attrs = raw.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        raise ContactError("attributes", "must be an object of text values")
    if len(attrs) > MAX_ATTRIBUTES:
        raise ContactError("attributes", f"must have at most {MAX_ATTRIBUTES} entries")
    clean: dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not _COLUMN_RE.match(key) or key in KNOWN:
            raise ContactError(f"attributes.{key}", "is not a valid attribute name (a-z, 0-9, _)")
        if value is None:
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ContactError(f"attributes.{key}", "must be text or a number")
        text = str(value)
        if len(text) > MAX_VALUE or _CONTROL.search(text):
            raise ContactError(f"attributes.{key}", f"must be at most {MAX_VALUE} characters on one line")
        clean[key] = text
    out["attributes"] = clean
    return out


def plan_import(data: bytes) -> ImportPlan:
    """Parse a CSV upload into the contacts to add and a report of the refused rows (the
    store then marks the ones the partner had already as duplicates). ContactError when the
    file itself is unusable (not UTF-8, no email column, too big)."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ContactError("file", f"must be at most {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ContactError("file", "must be UTF-8 text (CSV)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ContactError("file", "is empty: the first row names the columns (email, first_name, ...)") from None
    except csv.Error as exc:
        raise ContactError("file", f"is not CSV: {exc}") from None
    columns = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    if "email" not in columns:
        raise ContactError("file", "needs an email column (the first row names the columns)")
    bad = [c for c in columns if c and not _COLUMN_RE.match(c)]
    if bad:
        raise ContactError("file", f"has column names that are not a-z, 0-9, _: {', '.join(bad[:5])}")
    plan = ImportPlan()
    seen: set[str] = set()
    try:
        for n, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if n - 1 > MAX_IMPORT_ROWS:
                raise ContactError("file", f"must have at most {MAX_IMPORT_ROWS} rows")
            row = {c: v.strip() for c, v in zip(columns, values, strict=False) if c}
            email = row.get("email", "")
            raw: dict[str, Any] = {k: row.get(k) for k in KNOWN}
            raw["attributes"] = {k: v for k, v in row.items() if k not in KNOWN and v}
            try:
                contact = check_contact(raw)
            except ContactError as exc:
                status = "bad email" if exc.field == "email" else "error"
                plan.report.append(RowReport(n, email[:254], status, str(exc)))
                continue
            if contact["email_key"] in seen:
                plan.report.append(RowReport(n, contact["email"], "duplicate", "repeats an earlier row"))
                continue
            seen.add(contact["email_key"])
            plan.contacts.append({**contact, "row": n})
    except csv.Error as exc:
        raise ContactError("file", f"is not CSV: {exc}") from None
    return plan


# -- campaign status -------------------------------------------------------------------------------

DRAFT, PENDING, APPROVED, REJECTED, SENDING, DONE = (
    "draft", "pending approval", "approved", "rejected", "sending", "done")


def campaign_status(*, launched: bool, approval_needed: bool, approval_state: str | None,
                    approval_current: bool, unfinished: int, active_members: int) -> str:
    """What the portal shows: draft, pending approval, approved, rejected, sending, done."""
    if launched:
        return SENDING if unfinished or active_members else DONE
    if not approval_needed:
        return DRAFT
    if approval_state is None or not approval_current or approval_state == "superseded":
        return DRAFT
    return {"pending": PENDING, "approved": APPROVED, "rejected": REJECTED}.get(approval_state, DRAFT)


def mask_email(address: str) -> str:
    """``j***@example.com``: what the brand sees of an address without dm:contacts."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
