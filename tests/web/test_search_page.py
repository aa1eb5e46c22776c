"""/admin/subscribers finds people by any part of a name or address, in any script, and shows an
internationalized domain in Unicode (subscribers/search.py)."""

from __future__ import annotations

import pytest

from tests.web.admin_helpers import add_user, login

HTML = {"accept": "text/html"}


@pytest.mark.parametrize("typed, shown", [
    ("bücher", "jose@bücher.example"), ("Lee", "ann@example.com"), ("ødegaard", "kari@example.no"),
    ("Мария", "maria@example.ru"), ("Łukasz", "lukasz@example.pl"),
])
def test_the_admin_search_finds_any_part_in_any_script(live, typed, shown):
    from subscribers import store

    with live.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank").id
        for email, name in (("jose@bücher.example", "José"), ("ann@example.com", "Ann Lee"),
                            ("kari@example.no", "Kari Ødegaard"), ("maria@example.ru", "Мария"),
                            ("lukasz@example.pl", "Łukasz Nowak")):
            store.add_subscriber(conn, email, crank, name=name)
    add_user(live)
    page = login(live).get("/admin/subscribers", params={"q": typed}, headers=HTML).text
    assert f">{shown}</a>" in page and page.count('href="/admin/subscribers/') >= 1
    assert "xn--" not in page
    others = {"jose@bücher.example", "ann@example.com", "kari@example.no", "maria@example.ru", "lukasz@example.pl"}
    assert not any(f">{other}</a>" in page for other in others - {shown})


def test_the_admins_add_form_refuses_an_address_no_backend_can_deliver(live):
    from tests.web.admin_helpers import page_token

    add_user(live)
    admin = login(live)
    token = page_token(admin, "/admin/subscribers")
    refused = admin.post("/admin/subscribers", headers=HTML, data={
        "csrf": token, "email": "josé@bücher.example", "list": "crank"})
    assert refused.status_code == 400 and "needs SMTPUTF8" in refused.text
    taken = admin.post("/admin/subscribers", headers=HTML, data={
        "csrf": token, "email": "jose@bücher.example", "list": "crank"})
    assert taken.status_code == 303
