"""Tickets, CSRF tokens and API tokens, as PVE issues and checks them."""

from __future__ import annotations

import re
import time

import pytest

from proxbox.sim.auth import COOKIE, Authenticator, Credentials


@pytest.fixture
def auth():
    return Authenticator(Credentials.make(password="pw", token="root@pam!sync=s3cret"), ticket_ttl_s=60)


def test_credentials_defaults_are_random_and_token_form_is_validated():
    a, b = Credentials.make(), Credentials.make()
    assert a.token_id == "root@pam!proxbox" and a.token_secret != b.token_secret and a.password != b.password
    assert Credentials.make(token="netbox@pve!sync=abc").token_name == "sync"
    for bad in ("nobang=abc", "root@pam!x", "user!x=1"):
        with pytest.raises(ValueError):
            Credentials.make(token=bad)
    with pytest.raises(ValueError):
        Credentials.make(user="root")


def test_password_login_issues_a_pve_shaped_ticket_and_csrf(auth):
    assert auth.login("root@pam", "pw") == "root@pam"
    assert auth.login("root", "pw", realm="pam") == "root@pam"
    assert auth.login("root@pam", "wrong") is None
    assert auth.login("other@pve", "pw") is None
    ticket, csrf = auth.issue("root@pam")
    assert re.fullmatch(r"PVE:root@pam:[0-9A-F]{8}::[A-Za-z0-9+/=]+", ticket)
    assert re.fullmatch(r"[0-9A-F]{8}:[A-Za-z0-9+/=]+", csrf)
    assert auth.check_ticket(ticket) == "root@pam"
    assert (
        auth.check_csrf(csrf, "root@pam")
        and not auth.check_csrf(csrf, "x@pam")
        and not auth.check_csrf(None, "r")
    )


def test_tampered_tickets_are_refused(auth):
    ticket, _ = auth.issue("root@pam")
    assert auth.check_ticket(ticket.replace("root@pam", "evil@pam")) is None
    assert auth.check_ticket(ticket[:-2] + "AA") is None
    assert auth.check_ticket("garbage") is None


def test_a_valid_ticket_renews_itself_as_the_password(auth):
    ticket, _ = auth.issue("root@pam")
    assert auth.login("root@pam", ticket) == "root@pam"


def test_tickets_expire_after_the_ttl():
    auth = Authenticator(Credentials.make(password="pw"), ticket_ttl_s=0.05)
    ticket, _ = auth.issue("root@pam")
    assert auth.check_ticket(ticket) == "root@pam"
    time.sleep(0.1)
    assert auth.check_ticket(ticket) is None
    assert auth.login("root@pam", ticket) is None


def test_revoking_tickets_invalidates_every_issued_one(auth):
    ticket, _ = auth.issue("root@pam")
    auth.revoke_tickets()
    assert auth.check_ticket(ticket) is None


def test_token_header_forms_and_rotation(auth):
    assert auth.check_token("PVEAPIToken=root@pam!sync=s3cret") == "root@pam"
    assert auth.check_token("PVEAPIToken root@pam!sync=s3cret") == "root@pam"
    assert auth.check_token("PVEAPIToken=root@pam!sync=wrong") is None
    assert auth.check_token("PVEAPIToken=root@pam!other=s3cret") is None
    assert auth.check_token("PVEAPITokenroot@pam!sync=s3cret") is None
    new = auth.rotate_token()
    assert auth.check_token("PVEAPIToken=root@pam!sync=s3cret") is None
    assert auth.check_token(f"PVEAPIToken=root@pam!sync={new}") == "root@pam"


def test_ticket_cookie_wins_over_a_token_header(auth):
    ticket, _ = auth.issue("root@pam")
    headers = {"Authorization": "PVEAPIToken=root@pam!sync=wrong"}
    result = auth.authenticate({COOKIE: ticket}, headers)
    assert (result.kind, result.user) == ("ticket", "root@pam")
    assert auth.authenticate({}, headers).user is None
    assert auth.authenticate({}, {}).reason == "No ticket"


def test_a_ticket_is_good_only_on_the_cluster_that_issued_it(auth):
    ticket, csrf = auth.issue("root@pam", "east")
    assert auth.check_ticket(ticket, "east") == "root@pam"
    assert auth.check_ticket(ticket, "west") is None
    assert auth.check_ticket(ticket) == "root@pam"  # any cluster (the simulator's control API)
    assert auth.check_csrf(csrf, "root@pam", "east") and not auth.check_csrf(csrf, "root@pam", "west")
    assert auth.login("root@pam", ticket, scope="west") is None
    assert auth.login("root@pam", ticket, scope="east") == "root@pam"
