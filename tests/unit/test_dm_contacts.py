"""Contacts (one checked, a CSV import planned row by row), campaign status, masked addresses;
and the DM API is in the OpenAPI document, route for route."""

from __future__ import annotations

import pytest

from engine.logic.dm.contacts import (
    ContactError,
    campaign_status,
    check_contact,
    mask_email,
    plan_import,
)


def test_check_contact_normalises_and_names_the_field() -> None:
    c = check_contact({"email": " Ann@Example.COM ", "first_name": "Ann", "attributes": {"city": "Leeds", "n": 3}})
    assert c["email"] == "Ann@example.com" and c["email_key"] == "ann@example.com"
    assert c["attributes"] == {"city": "Leeds", "n": "3"}
    for raw, field in [({"email": "nope"}, "email"), ({"email": "a@b.co", "first_name": "x\n"}, "first_name"),
                       ({"email": "a@b.co", "user_id": "has space"}, "user_id"),
                       ({"email": "a@b.co", "attributes": {"Bad Key": "x"}}, "attributes.Bad Key"),
                       ({"email": "a@b.co", "attributes": {"email": "x"}}, "attributes.email")]:
        with pytest.raises(ContactError) as exc:
            check_contact(raw)
        assert exc.value.field == field


def test_plan_import_reports_every_refused_row() -> None:
    plan = plan_import(b"\xef\xbb\xbfEmail,First Name,city\na@example.com,A,York\nbad,B,\n"
                       b"A@EXAMPLE.com,Dup,\n\nb@example.com,,Hull\n")
    assert [(c["row"], c["email"]) for c in plan.contacts] == [(2, "a@example.com"), (6, "b@example.com")]
    assert plan.contacts[1]["attributes"] == {"city": "Hull"}
    assert [(r.row, r.status) for r in plan.report] == [(3, "bad email"), (4, "duplicate")]


@pytest.mark.parametrize("data, reason", [(b"", "empty"), (b"name\nx\n", "email column"),
                                          (b"\xff\xfe", "UTF-8"), (b"email,bad col!\n", "column names")])
def test_plan_import_refuses_an_unusable_file(data: bytes, reason: str) -> None:
    with pytest.raises(ContactError) as exc:
        plan_import(data)
    assert exc.value.field == "file" and reason in exc.value.reason


def test_campaign_status() -> None:
    assert campaign_status(launched=False, approval_needed=False, approval_state=None, approval_current=False,
                           unfinished=0, active_members=0) == "draft"
    assert campaign_status(launched=False, approval_needed=True, approval_state="pending", approval_current=True,
                           unfinished=0, active_members=0) == "pending approval"
    assert campaign_status(launched=False, approval_needed=True, approval_state="approved", approval_current=False,
                           unfinished=0, active_members=0) == "draft"  # approved content was edited
    assert campaign_status(launched=False, approval_needed=True, approval_state="rejected", approval_current=True,
                           unfinished=0, active_members=0) == "rejected"
    assert campaign_status(launched=True, approval_needed=True, approval_state="approved", approval_current=True,
                           unfinished=2, active_members=0) == "sending"
    assert campaign_status(launched=True, approval_needed=False, approval_state=None, approval_current=False,
                           unfinished=0, active_members=0) == "done"


def test_mask_email() -> None:
    assert mask_email("jane@example.com") == "j***@example.com"
    assert mask_email("nonsense") == "***"


def test_every_dm_api_route_is_in_the_openapi_document() -> None:
    from engine.api import route_keys
    from engine.openapi import openapi
    from engine.routes import dm_api

    doc = openapi()["paths"]
    for route in dm_api.routes():
        for method, path in route_keys(route):
            assert method.lower() in doc.get(path, {}), (method, path)
            assert doc[path][method.lower()]["x-kairos-policy"]
