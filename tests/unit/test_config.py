"""Settings: a good file loads, the environment overrides it, and every kind of bad input names the key."""

from __future__ import annotations

import json
import textwrap

import pytest

from proxbox.cli import main
from proxbox.config import load_settings, redacted, secrets_of, settings_from_dict
from proxbox.errors import ConfigError

GOOD = """
[server]
port = 9000
api_keys = ["key-one-SECRET"]

[netbox]
url = "https://netbox.example.com/"
token = "nb-token-SECRET"
verify_ssl = "/etc/ssl/ca.pem"

[[proxmox]]
name = "lab-a"
host = "pve-a.example.com"
user = "netbox@pve"
token_name = "sync"
token_value = "pve-token-SECRET"

[[proxmox]]
host = "pve-b.example.com"
user = "root@pam"
password = "pve-password-SECRET"

[sync]
prune = true
exclude_guests = ["^tmp-"]

[logging]
level = "debug"
"""


def write(tmp_path, text, name="proxbox.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def minimal(**extra):
    data = {"netbox": {"url": "http://nb", "token": "t"}}
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    return data


def test_good_file_loads_into_typed_settings(tmp_path):
    s = load_settings(write(tmp_path, GOOD), env={})
    assert s.server.port == 9000
    assert s.netbox.url == "https://netbox.example.com"  # trailing slash dropped
    assert s.netbox.verify_ssl == "/etc/ssl/ca.pem"
    assert [p.name for p in s.proxmox] == ["lab-a", "pve-b.example.com"]  # name defaults to host
    assert s.proxmox[0].uses_token and not s.proxmox[1].uses_token
    assert s.sync.prune is True and s.sync.exclude_guests == ("^tmp-",)
    assert s.logging.level == "debug"


def test_config_path_comes_from_proxbox_config_env(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_settings(None, env={"PROXBOX_CONFIG": path}).server.port == 9000


def test_environment_overrides_file_values_with_parsed_types(tmp_path):
    env = {
        "PROXBOX_SERVER_PORT": "9100",
        "PROXBOX_SYNC_PRUNE": "false",
        "PROXBOX_NETBOX_VERIFY_SSL": "no",
        "PROXBOX_SYNC_EXCLUDE_NODES": "pve9, pve10",
        "PROXBOX_PROXMOX_1_PORT": "8007",
        "PROXBOX_PROXMOX_2_HOST": "pve-c",
        "PROXBOX_PROXMOX_2_USER": "root@pam",
        "PROXBOX_PROXMOX_2_PASSWORD": "x",
    }
    s = load_settings(write(tmp_path, GOOD), env=env)
    assert s.server.port == 9100
    assert s.sync.prune is False
    assert s.netbox.verify_ssl is False
    assert s.sync.exclude_nodes == ("pve9", "pve10")
    assert s.proxmox[1].port == 8007
    assert s.proxmox[2].host == "pve-c"


def test_secrets_can_come_from_files(tmp_path):
    token = tmp_path / "nb-token"
    token.write_text("from-file-SECRET\n")
    keys = tmp_path / "keys"
    keys.write_text("# comment\nk1\n\nk2\n")
    s = settings_from_dict(
        {"netbox": {"url": "http://nb", "token_file": str(token)}, "server": {"api_keys_file": str(keys)}}
    )
    assert s.netbox.token == "from-file-SECRET"
    assert s.server.api_keys == ("k1", "k2")


@pytest.mark.parametrize(
    ("data", "key", "why"),
    [
        ({"netbox": {"token": "t"}}, "netbox.url", "is required"),
        (minimal(netbox={"url": "netbox.example.com"}), "netbox.url", "must be an http(s) URL"),
        (minimal(netbox={"tokn": "x"}), "netbox.tokn", "unknown key"),
        ({"netbox": {"url": "http://nb"}}, "netbox.token", "is required"),
        (minimal(netbox={"timeout": "fast"}), "netbox.timeout", "expected a number"),
        (minimal(netbox={"timeout": 0}), "netbox.timeout", "greater than 0"),
        (minimal(server={"port": "80"}), "server.port", "expected an integer"),
        (minimal(sync={"prune": "yes"}), "sync.prune", "expected true or false"),
        (minimal(sync={"primary_ip": "sometimes"}), "sync.primary_ip", "must be one of"),
        (minimal(sync={"exclude_guests": ["("]}), "sync.exclude_guests[0]", "invalid regular expression"),
        (minimal(sync={"include_tags": "prod"}), "sync.include_tags", "expected a list"),
        ({**minimal(), "proxmx": {}}, "proxmx", "unknown section"),
        ({**minimal(), "proxmox": {"host": "x"}}, "proxmox", "array of tables"),
        ({**minimal(), "proxmox": [{"user": "root@pam", "password": "p"}]}, "proxmox[0].host", "is required"),
        (
            {**minimal(), "proxmox": [{"host": "h", "user": "root", "password": "p"}]},
            "proxmox[0].user",
            "user@realm",
        ),
        ({**minimal(), "proxmox": [{"host": "h", "user": "a@pve"}]}, "proxmox[0].token_name", "authenticate"),
        (
            {**minimal(), "proxmox": [{"host": "h", "user": "a@pve", "token_name": "t"}]},
            "proxmox[0].token_value",
            "is required",
        ),
        (
            {**minimal(), "proxmox": [{"host": "h", "user": "a@pve", "password": "p", "concurrency": 64}]},
            "proxmox[0].concurrency",
            "between 1 and 8",
        ),
        (
            {**minimal(), "proxmox": [{"host": "h", "user": "a@pve", "password": "p", "colour": "x"}]},
            "proxmox[0].colour",
            "unknown key",
        ),
        (
            {**minimal(), "proxmox": [{"host": "h", "user": "a@pve", "password": "p"}] * 2},
            "proxmox[1].name",
            "duplicate endpoint name",
        ),
        (
            minimal(netbox={"token_file": "/nonexistent/token"}),
            "netbox.token_file",
            "cannot read secret file",
        ),
    ],
)
def test_bad_input_names_the_key_and_why(data, key, why):
    with pytest.raises(ConfigError) as excinfo:
        settings_from_dict(data)
    assert excinfo.value.key == key
    assert why in excinfo.value.why


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PROXBOX_NETBOX_TIMEOUT": "abc"}, "netbox.timeout"),
        ({"PROXBOX_SERVER_PORT": "eighty"}, "server.port"),
        ({"PROXBOX_WHATEVER_X": "1"}, "PROXBOX_WHATEVER_X"),
        ({"PROXBOX_PROXMOX_HOST": "x"}, "PROXBOX_PROXMOX_HOST"),
        ({"PROXBOX_PROXMOX_5_HOST": "x"}, "PROXBOX_PROXMOX_5_HOST"),
    ],
)
def test_bad_environment_overrides_name_the_variable_or_key(env, key):
    with pytest.raises(ConfigError) as excinfo:
        settings_from_dict(minimal(), env)
    assert excinfo.value.key == key


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[netbox\nurl = 1"), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "missing.toml"), env={})


def test_redacted_settings_hide_every_secret(tmp_path):
    s = load_settings(write(tmp_path, GOOD), env={})
    text = json.dumps(redacted(s))
    assert sorted(secrets_of(s)) == sorted(
        ["key-one-SECRET", "nb-token-SECRET", "pve-token-SECRET", "pve-password-SECRET"]
    )
    assert "SECRET" not in text
    assert redacted(s)["netbox"]["token"] == "***"


def test_config_check_prints_effective_settings_without_secrets(tmp_path, capsys):
    assert main(["config", "check", "--config", write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "port = 9000" in out and 'url = "https://netbox.example.com"' in out
    assert "SECRET" not in out


def test_config_check_with_unknown_key_exits_nonzero_with_one_line_naming_it(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("[logging]", "[logging]\nverbosity = 3"))
    assert main(["config", "check", "--config", path]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "logging.verbosity" in lines[0] and "unknown key" in lines[0]
    assert "SECRET" not in captured.out + captured.err


def test_config_check_with_missing_netbox_url_names_the_key(tmp_path, capsys):
    path = write(tmp_path, '[netbox]\ntoken = "nb-token-SECRET"\n')
    assert main(["--config", path, "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "netbox.url" in err and "SECRET" not in err


def test_config_example_is_itself_a_valid_config(tmp_path, capsys):
    assert main(["config", "example"]) == 0
    text = capsys.readouterr().out
    token = tmp_path / "t"
    token.write_text("x")
    text = text.replace("/run/credentials/proxbox.service/netbox-token", str(token))
    text = text.replace("/run/credentials/proxbox.service/pve-lab-a", str(token))
    s = load_settings(write(tmp_path, text), env={})
    assert s.netbox.url == "https://netbox.example.com"
    assert s.proxmox[0].name == "lab-a"


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    assert "config" in capsys.readouterr().out
