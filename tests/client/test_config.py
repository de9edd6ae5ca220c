"""Settings precedence and validation (pure logic: no server needed)."""

import json

import pytest

from whylogs_songbird.config import Settings, resolve_settings
from whylogs_songbird.connect import make_client
from whylogs_songbird.errors import ConfigError


def test_defaults_when_nothing_is_set(tmp_path):
    settings = resolve_settings({"config_dir": tmp_path}, environ={})
    # The embedded default: a local server on 8737, with its data in the user data dir.
    assert settings.endpoint == "http://127.0.0.1:8737" and settings.embedded
    assert settings.server_data_dir.parts[-2:] == ("whylogs-songbird", "server")
    assert settings.session_id is None and settings.api_key is None
    assert settings.max_workers == 32 and settings.outbox is True
    assert settings.outbox_path == tmp_path / "outbox"


def test_option_beats_env_beats_file_beats_default(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"endpoint": "http://127.0.0.1:1111", "org_id": "org-file", "max_retries": 1})
    )
    env = {"SONGBIRD_API_ENDPOINT": "http://127.0.0.1:2222", "SONGBIRD_ORG_ID": "org-env"}
    settings = resolve_settings({"config_dir": tmp_path, "org_id": "org-option"}, environ=env)
    assert settings.endpoint == "http://127.0.0.1:2222"  # env beats file
    assert settings.org_id == "org-option"  # option beats env
    assert settings.max_retries == 1  # file beats default
    assert settings.timeout == 60.0  # default


def test_songbird_endpoint_env_beats_whylabs_endpoint_env(tmp_path):
    env = {"WHYLABS_API_ENDPOINT": "http://127.0.0.1:3333"}
    assert resolve_settings({"config_dir": tmp_path}, environ=env).endpoint == "http://127.0.0.1:3333"
    env["SONGBIRD_API_ENDPOINT"] = "http://127.0.0.1:4444/"
    assert resolve_settings({"config_dir": tmp_path}, environ=env).endpoint == "http://127.0.0.1:4444"


@pytest.mark.parametrize(
    "options, words",
    [
        ({"endpoint": "127.0.0.1:8787"}, "not an http(s) URL"),
        ({"endpoint": "ftp://example.org"}, "not an http(s) URL"),
        ({"endpoint": ""}, "empty"),
        ({"timeout": 0}, "more than 0"),
        ({"timeout": "soon"}, "number of seconds"),
        ({"max_retries": -1}, "between 0 and 64"),
        ({"max_workers": 0}, "between 1 and 64"),
        ({"outbox": "maybe"}, "true or false"),
        ({"colour": "blue"}, "Unknown songbird option"),
    ],
)
def test_bad_values_are_config_errors_that_say_what_to_do(tmp_path, options, words):
    with pytest.raises(ConfigError, match=None) as info:
        resolve_settings({"config_dir": tmp_path, **options}, environ={})
    assert words in str(info.value)


def test_bad_config_file_is_reported_with_its_path(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as info:
        resolve_settings({"config_dir": tmp_path}, environ={})
    assert str(tmp_path / "config.json") in str(info.value)
    (tmp_path / "config.json").write_text(json.dumps({"endpont": "http://127.0.0.1:1"}))
    with pytest.raises(ConfigError, match="Unknown setting 'endpont'; did you mean 'endpoint'"):
        resolve_settings({"config_dir": tmp_path}, environ={})


def test_api_key_never_in_repr(tmp_path):
    settings = resolve_settings({"config_dir": tmp_path, "api_key": "sekrit.value:org-1"}, environ={})
    assert "sekrit" not in repr(settings) and "sekrit" not in str(settings)
    assert "***" in repr(settings)
    assert "sekrit" not in repr(Settings(api_key="sekrit"))


def test_make_client_uses_every_transport_setting(tmp_path):
    settings = resolve_settings(
        {"config_dir": tmp_path, "endpoint": "http://127.0.0.1:5", "timeout": 30, "max_retries": 2}, environ={}
    )
    client = make_client(settings)
    assert (client.endpoint, client.timeout, client.max_retries) == ("http://127.0.0.1:5", (5.0, 30.0), 2)
    assert make_client(settings, "http://127.0.0.1:6").endpoint == "http://127.0.0.1:6"


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"max_retries": 3.9},
        {"max_retries": True},
        {"outbox_dir": 5},
        {"config_dir": ""},
        {"backoff": float("inf")},
    ],
)
def test_odd_values_are_config_errors(tmp_path, options):
    with pytest.raises(ConfigError):
        resolve_settings({"config_dir": tmp_path, **options} if "config_dir" not in options else options, environ={})


def test_config_dir_env_comes_from_the_given_environment(tmp_path):
    assert resolve_settings(environ={"SONGBIRD_CONFIG_DIR": str(tmp_path)}).config_dir == tmp_path


def test_an_endpoint_set_anywhere_turns_the_embedded_default_off(tmp_path):
    hosted = resolve_settings({"config_dir": tmp_path, "endpoint": "https://api.whylabsapp.com"}, environ={})
    assert hosted.endpoint == "https://api.whylabsapp.com" and not hosted.embedded
    from_env = resolve_settings({"config_dir": tmp_path}, environ={"WHYLABS_API_ENDPOINT": "http://127.0.0.1:9"})
    assert from_env.endpoint == "http://127.0.0.1:9" and not from_env.embedded
    other_port = resolve_settings({"config_dir": tmp_path}, environ={"SONGBIRD_LOCAL_PORT": "18999"})
    assert other_port.endpoint == "http://127.0.0.1:18999" and other_port.embedded


@pytest.mark.parametrize(
    ("options", "suggestion"),
    [({"reference_name": "x"}, None), ({"endpont": "x"}, "endpoint"), ({"max_worker": 2}, "max_workers")],
)
def test_unknown_option_lists_every_valid_name_and_the_closest(tmp_path, options, suggestion):
    with pytest.raises(ConfigError) as info:
        resolve_settings({"config_dir": tmp_path, **options}, environ={})
    message = str(info.value)
    for name in ("endpoint", "session_id", "timeout", "max_workers", "outbox_dir", "local_port"):
        assert name in message
    if suggestion:
        assert f"did you mean {suggestion!r}" in message


def test_writer_unknown_option_suggests_reference_profile_name():
    import whylogs_songbird  # noqa: F401
    from whylogs_songbird.writer import SongbirdWriter

    with pytest.raises(ConfigError) as info:
        SongbirdWriter().option(reference_name="train")
    message = str(info.value)
    assert "did you mean 'reference_profile_name'" in message
    assert "dataset_timestamp" in message and "endpoint" in message
