"""Catalog links: http(s) or a path on the shop's own host, never another host by sleight."""

import pytest


@pytest.mark.parametrize("url", ["//evil.example/p/1", "/\\evil.example", "javascript:alert(1)",
                                 "data:text/html,x", "ftp://x.example/"])
def test_catalog_links_refuse_other_hosts_by_sleight(url):
    from engine.logic.catalog import ItemError, validate_item

    with pytest.raises(ItemError) as info:
        validate_item({"id": "a", "url": url})
    assert info.value.field == "url" and "never //host" in info.value.reason
    assert validate_item({"id": "a", "url": "/p/1", "image": "https://cdn.example/a.jpg"})["url"] == "/p/1"
