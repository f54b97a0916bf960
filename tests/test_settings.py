"""A setting that cannot work stops the process with one line naming it;
a variable spelled almost like a setting gets a warning naming the real one."""

from __future__ import annotations

import pytest

from chat.config import Config, SettingError, misspelled
from deploy.procs import wait_until


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PING_INTERVAL_S", "0.3", "a whole number of at least 1"),
        ("MAX_ROOMS", "-1", "a whole number of at least 1"),
        ("MAX_ROOMS", "0", "a whole number of at least 1"),
        ("RATE_PER_S", "fast", "a number greater than 0"),
        ("CLIENT_IPV6_PREFIX", "129", "a whole number from 1 to 128"),
        ("LOG_FORMAT", "yaml", "one of text, json"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,nginx", "addresses or networks"),
        ("STORE_TIMEOUT_S", "nan", "a number greater than 0"),
    ],
)
def test_a_bad_value_names_its_variable_and_what_it_expects(
    monkeypatch, name, value, expected
):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as raised:
        Config()
    assert str(raised.value).startswith(f"{name}={value!r}: expected ")
    assert expected in str(raised.value)


def test_a_redis_url_with_an_unknown_scheme_is_refused_without_its_password(
    monkeypatch,
):
    monkeypatch.setenv("REDIS_URL", "http://:s3cret@redis:6379/0")
    with pytest.raises(SettingError) as raised:
        Config()
    assert "REDIS_URL" in str(raised.value) and "s3cret" not in str(raised.value)


def test_settings_that_only_work_together_are_checked_together(monkeypatch):
    monkeypatch.setenv("PRESENCE_HEARTBEAT_S", "5")
    monkeypatch.setenv("PRESENCE_TTL_S", "5")
    with pytest.raises(SettingError, match="PRESENCE_TTL_S='5': expected more than"):
        Config()


def test_zero_turns_off_what_the_readme_says_zero_turns_off(monkeypatch):
    for name in ("MAX_CONNECTIONS_PER_IP", "CLIENT_MESSAGES_PER_S", "LEAVE_GRACE_S"):
        monkeypatch.setenv(name, "0")
    config = Config()
    assert config.MAX_CONNECTIONS_PER_IP == 0 and config.LEAVE_GRACE_S == 0


def test_a_variable_spelled_like_a_setting_is_named_with_the_real_one(monkeypatch):
    names = Config().names()
    found = misspelled(names, {"REDIS_ULR": "x", "PATH": "/bin", "PORT": "1"})
    assert found == [("REDIS_ULR", "REDIS_URL")]
    monkeypatch.setenv("MAX_ROOM", "5")
    assert "MAX_ROOM is not a setting; did you mean MAX_ROOMS?" in Config().warnings


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"MAX_ROOMS": "-1"}, "cannot start: MAX_ROOMS='-1': expected a whole number"),
        (
            {"PING_INTERVAL_S": "0.3"},
            "cannot start: PING_INTERVAL_S='0.3': expected a whole number",
        ),
        ({"PORT": "abc"}, "cannot start: PORT='abc': expected a whole number"),
    ],
)
def test_gunicorn_stops_with_one_line_and_no_traceback(gunicorn, env, line):
    instance = gunicorn(env, wait=False)
    wait_until(lambda: not instance.running(), 30, "gunicorn to give up")
    assert instance.proc.returncode != 0
    log = instance.log()
    assert line in log
    assert "Traceback" not in log


@pytest.mark.e2e
def test_a_misspelled_variable_is_warned_about_and_the_chat_still_runs(
    gunicorn, clients
):
    instance = gunicorn({"REDIS_ULR": "redis://127.0.0.1:1/0"})
    assert "REDIS_ULR is not a setting; did you mean REDIS_URL?" in instance.log()
    user = clients(instance.url, auth={"username": "Ann"})
    assert user.wait_for("login")["numUsers"] == 1
