"""The retry policy: what each failure means (pure classification, no I/O)."""

from __future__ import annotations

import json
import random
import ssl

import pytest
import requests
from proxmoxer import AuthenticationError, ResourceException

from proxbox.errors import (
    ProxmoxAuthError,
    ProxmoxBadRequest,
    ProxmoxMalformedResponse,
    ProxmoxNotFound,
    ProxmoxPermissionError,
    ProxmoxUnavailable,
)
from proxbox.proxmox.retry import MalformedPayload, backoff_delay, check_shape, classify, expected_shape


def http(status: int, reason: str = "") -> ResourceException:
    return ResourceException(status, "status text", reason, errors=None)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 595, 596, 597])
def test_server_errors_and_proxy_errors_are_retried(status):
    failure = classify(http(status, "No route to host"))
    assert failure.retry is True
    assert failure.error is ProxmoxUnavailable
    assert failure.status == status


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProxmoxBadRequest), (403, ProxmoxPermissionError), (501, ProxmoxNotFound), (404, ProxmoxNotFound)],
)
def test_client_errors_are_never_retried(status, error):
    failure = classify(http(status, "Permission check failed (/vms/100, VM.Audit)"))
    assert failure.retry is False
    assert failure.relogin is False
    assert failure.error is error


def test_401_asks_for_one_relogin():
    failure = classify(http(401, "authentication failure"))
    assert failure.relogin is True
    assert failure.retry is False
    assert failure.error is ProxmoxAuthError


@pytest.mark.parametrize(
    "reason",
    [
        "No QEMU guest agent configured",
        "VM 100 is not running",
        "QEMU guest agent is not running",
        "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist",
        "CT 200 not running",
    ],
)
def test_known_no_data_500s_are_absent_not_failures(reason):
    failure = classify(http(500, reason))
    assert failure.absent is True
    assert failure.retry is False


def test_other_500s_are_not_absent():
    assert classify(http(503, "VM 100 is not running")).absent is False  # only a 500 means "no data"


def test_an_unresolvable_node_fails_at_once_and_never_reads_as_empty():
    """An empty answer for a node being removed would make its guests look deleted; retrying cannot help."""
    failure = classify(http(500, "hostname lookup 'pveX' failed - failed to get address info for: pveX"))
    assert (failure.absent, failure.retry, failure.error) == (False, False, ProxmoxUnavailable)


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("IncompleteRead"),
        requests.exceptions.SSLError("EOF occurred in violation of protocol"),
        TimeoutError(),
    ],
)
def test_transport_failures_are_retried_as_unavailable(exc):
    failure = classify(exc)
    assert failure.retry is True
    assert failure.error is ProxmoxUnavailable


def test_certificate_verification_failure_is_not_retried():
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    exc = requests.exceptions.SSLError(cause)
    failure = classify(exc)
    assert failure.retry is False
    assert failure.kind == "tls_verify"


@pytest.mark.parametrize(
    "exc", [KeyError("data"), TypeError("list indices"), MalformedPayload("expected a list")]
)
def test_answers_without_envelope_or_wrong_shape_are_malformed_and_retried(exc):
    failure = classify(exc)
    assert failure.retry is True
    assert failure.error is ProxmoxMalformedResponse


def test_login_refused_is_an_auth_error_without_retry():
    exc = AuthenticationError(
        "Couldn't authenticate user: root@pam to https://h:8006/api2/json/access/ticket code: 401"
    )
    failure = classify(exc)
    assert (failure.error, failure.retry, failure.status) == (ProxmoxAuthError, False, 401)
    assert "root@pam" not in failure.reason


def test_login_answered_by_a_server_error_is_retried():
    exc = AuthenticationError("Couldn't authenticate user: root@pam to https://h/access/ticket code: 503")
    failure = classify(exc)
    assert (failure.error, failure.retry) == (ProxmoxUnavailable, True)


def test_login_answer_that_is_not_json_is_malformed():
    exc = requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0)
    assert classify(exc).error is ProxmoxMalformedResponse
    assert classify(json.JSONDecodeError("x", "y", 0)).retry is True


def test_unknown_exceptions_are_not_retried():
    failure = classify(RuntimeError("bug"))
    assert failure.retry is False
    assert failure.kind == "internal"


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    ("parts", "shape"),
    [
        (("cluster", "status"), "list"),
        (("cluster", "resources"), "list"),
        (("version",), "dict"),
        (("nodes", "pve1", "qemu"), "list"),
        (("nodes", "pve1", "status"), "dict"),
        (("nodes", "pve1", "qemu", "100", "config"), "dict"),
        (("nodes", "pve1", "qemu", "100", "agent", "network-get-interfaces"), "dict"),
        (("nodes", "pve1", "lxc", "200", "interfaces"), "list_or_null"),
        (("something", "new"), "any"),
    ],
)
def test_expected_shape_of_each_endpoint(parts, shape):
    assert expected_shape(parts) == shape


def test_non_json_body_is_malformed_whatever_the_endpoint():
    assert check_shape({"errors": b"<html>502 Bad Gateway</html>"}, "any") is not None
    assert (
        check_shape({"errors": {"vmid": "invalid"}}, "dict") is None
    )  # a real dict that happens to say errors


def test_wrong_container_is_malformed():
    assert check_shape({"a": 1}, "list") == "expected a list, got dict"
    assert check_shape([], "dict") == "expected an object, got list"
    assert check_shape(None, "dict") == "expected an object, got null"
    assert check_shape(None, "list_or_null") is None
    assert check_shape([1], "list") is None


# ------------------------------------------------------------------------------------------------ backoff


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    rng = random.Random(7)
    for attempt in range(1, 8):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 0.5, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.5  # jitter spreads over the whole range


def test_backoff_is_capped():
    rng = random.Random(1)
    assert all(backoff_delay(30, 1.0, rng, cap_s=5.0) <= 5.0 for _ in range(100))


def test_zero_backoff_means_no_wait():
    assert backoff_delay(3, 0.0, random.Random()) == 0.0
