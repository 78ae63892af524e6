"""Fault rules: validation, matching and (seeded) scheduling, without any network."""

from __future__ import annotations

import pytest

from proxbox.sim.faults import FaultBook, FaultRule, wrong_shape


def _book(*specs, seed=1):
    book = FaultBook(seed)
    for spec in specs:
        book.add(spec)
    return book


def _fires(book, n, method="GET", path="/version", cluster="lab-a", node=None, auth="token"):
    return [book.evaluate(method, path, cluster, node, auth).rule is not None for _ in range(n)]


def test_unknown_keys_and_actions_are_rejected_with_the_key_named():
    with pytest.raises(ValueError, match="unknown fault keys: colour"):
        FaultRule.from_spec({"action": "drop", "colour": "red"}, 1, 1)
    with pytest.raises(ValueError, match="action must be one of"):
        FaultRule.from_spec({"action": "explode"}, 1, 1)
    with pytest.raises(ValueError, match="needs a status"):
        FaultRule.from_spec({"action": "status"}, 1, 1)
    with pytest.raises(ValueError, match="probability"):
        FaultRule.from_spec({"action": "drop", "probability": 2}, 1, 1)
    with pytest.raises(ValueError, match="path_regex"):
        FaultRule.from_spec({"action": "drop", "path_regex": "("}, 1, 1)


def test_action_defaults_from_status_or_latency():
    assert FaultRule.from_spec({"status": 503}, 1, 1).action == "status"
    assert FaultRule.from_spec({"latency_ms": 5}, 1, 1).action == "latency"


def test_glob_path_crosses_slashes_and_other_criteria_all_must_hold():
    rule = FaultRule.from_spec(
        {
            "action": "drop",
            "path": "/nodes/*/config",
            "cluster": "lab-a",
            "node": "pve-a1",
            "auth": "token",
            "method": "get",
        },
        1,
        1,
    )
    assert rule.matches("GET", "/nodes/pve-a1/qemu/100/config", "lab-a", "pve-a1", "token")
    assert not rule.matches("POST", "/nodes/pve-a1/qemu/100/config", "lab-a", "pve-a1", "token")
    assert not rule.matches("GET", "/nodes/pve-a1/qemu/100/config", "lab-b", "pve-a1", "token")
    assert not rule.matches("GET", "/nodes/pve-a1/qemu/100/config", "lab-a", "pve-a2", "token")
    assert not rule.matches("GET", "/nodes/pve-a1/qemu/100/config", "lab-a", "pve-a1", "ticket")
    assert not rule.matches("GET", "/nodes/pve-a1/qemu/100/status/current", "lab-a", "pve-a1", "token")


def test_regex_path_uses_search():
    rule = FaultRule.from_spec({"action": "drop", "path_regex": r"/agent/(get-osinfo|info)$"}, 1, 1)
    assert rule.matches("GET", "/nodes/n/qemu/1/agent/info", "c", "n", "token")
    assert not rule.matches("GET", "/nodes/n/qemu/1/agent/network-get-interfaces", "c", "n", "token")


def test_times_fires_only_the_first_n_matches():
    assert _fires(_book({"action": "drop", "times": 2}), 5) == [True, True, False, False, False]


def test_every_fires_every_kth_match():
    assert _fires(_book({"action": "drop", "every": 3}), 7) == [False, False, True, False, False, True, False]


def test_burst_alone_is_the_first_n_then_recovery():
    assert _fires(_book({"action": "drop", "burst": 2}), 4) == [True, True, False, False]


def test_every_with_burst_starts_a_run_of_failures():
    assert _fires(_book({"action": "drop", "every": 4, "burst": 2}), 10) == [
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]


def test_probability_is_seeded_and_reproducible():
    a = _fires(_book({"action": "drop", "probability": 0.5}, seed=7), 50)
    b = _fires(_book({"action": "drop", "probability": 0.5}, seed=7), 50)
    c = _fires(_book({"action": "drop", "probability": 0.5, "seed": 8}, seed=7), 50)
    assert a == b != c
    assert 10 < sum(a) < 40


def test_time_window_rules_wait_then_expire():
    book = _book({"action": "drop", "after_s": 60})
    assert _fires(book, 2) == [False, False]
    book = _book({"action": "drop", "for_s": 60})
    assert _fires(book, 1) == [True]
    book.rules[0].created -= 120
    assert _fires(book, 1) == [False]


def test_latency_rules_add_up_and_the_first_other_rule_decides():
    book = _book(
        {"action": "latency", "latency_ms": 5},
        {"action": "status", "status": 500, "latency_ms": 10},
        {"action": "drop"},
        {"action": "latency", "latency_ms": 1},
    )
    d = book.evaluate("GET", "/version", "lab-a", None, "token")
    assert d.rule is not None and d.rule.action == "status"
    assert d.delay_s == pytest.approx(0.016)
    assert book.rules[2].matched == 0


def test_rules_can_be_removed_and_cleared():
    book = _book({"action": "drop"}, {"action": "html"})
    assert book.remove(1) and not book.remove(1)
    assert [r.id for r in book.rules] == [2]
    book.clear()
    assert book.evaluate("GET", "/x", "c", None, "none").rule is None


def test_wrong_shape_swaps_containers():
    assert wrong_shape([1, 2]) == {"0": 1, "1": 2}
    assert wrong_shape({"a": 1}) == [{"a": 1}]
    assert wrong_shape(None) == {"value": None}


def test_to_dict_reports_counters():
    book = _book({"action": "drop", "times": 1})
    _fires(book, 3)
    d = book.rules[0].to_dict()
    assert d["id"] == 1 and d["action"] == "drop" and d["fired"] == 1 and d["matched"] == 1
