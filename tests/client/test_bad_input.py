"""A catalogue of bad input, through the public API (the writer and publish_references).

Each case must give a clear, typed error or message and leave no partial state behind: no
session, no upload slot, no stored profile. Unicode and URL-special characters in aliases and
segment values are not bad input: they must work end to end, links included.
"""

import html
import http.server
from datetime import datetime, timezone

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import http_server_thread
from loopback import send_answer
from whylogs.core import DatasetProfile
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird import (
    ConfigError,
    ProfileError,
    PublishError,
    SongbirdWriter,
    publish,
    publish_references,
)
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.server.common import segment_label

TIMEOUT = 10


@pytest.fixture
def df():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0], "n": [1, 2, 3], "city": ["a", "b", "a"]})


@pytest.fixture
def opts(server, tmp_path):
    return {"endpoint": server.url, "config_dir": str(tmp_path / "config"), "outbox": False, "max_retries": 0}


def assert_nothing_on(server):
    """No operation ran on the server: no session, no slot, nothing stored."""
    stats = server.stats()
    assert {op: n for op, n in stats.items() if n} == {}, stats
    assert server.store.recent_sessions() == []


def page_text(url):
    r = requests.get(url, timeout=TIMEOUT)
    assert r.status_code == 200, (url, r.text[:300])
    return html.unescape(r.text)


# -- what is published -----------------------------------------------------------------------


def test_not_a_writable(server, opts, df):
    for thing in (df, {"x": [1]}, None, 42):
        ok, message = SongbirdWriter(**opts).write(thing)
        assert ok is False and f"Cannot publish a {type(thing).__name__}" in message
        assert "why.log(df)" in message  # says what to give instead
    with pytest.raises(ProfileError, match="Cannot publish a DataFrame"):
        publish_references({"train": df}, **opts)
    with pytest.raises(ProfileError, match="Cannot publish a list"):
        publish([why.log(df)], **opts)
    assert_nothing_on(server)


def test_empty_profile_and_profile_without_columns(server, opts, df):
    empty = why.log(df.iloc[0:0])
    ok, message = empty.writer("songbird").option(**opts).write()
    assert ok is False and "is empty (0 rows in every column)" in message
    ok, message = SongbirdWriter(**opts).write(DatasetProfile())
    assert ok is False and "has no columns" in message
    with pytest.raises(ProfileError, match="has no columns"):
        publish_references({"train": why.log(df), "empty": DatasetProfile().view()}, **opts)
    assert_nothing_on(server)  # one bad profile among good ones: none is sent


def test_timestamp_in_seconds_is_detected(server, opts, df):
    seconds = 1_700_000_000
    writer = why.log(df).writer("songbird")
    with pytest.raises(ConfigError, match=f"looks like epoch seconds.*use {seconds * 1000}"):
        writer.option(dataset_timestamp=seconds, **opts)
    ok, message = SongbirdWriter(**opts).write(why.log(df), dataset_timestamp=seconds)
    assert ok is False and "epoch seconds" in message and "milliseconds" in message
    with pytest.raises(ConfigError, match="epoch seconds"):
        publish(why.log(df), dataset_timestamp=float(seconds), **opts)
    assert_nothing_on(server)


@pytest.mark.parametrize(
    "stamp, words",
    [
        (-1, "before 1970"),
        (datetime(1960, 1, 1, tzinfo=timezone.utc), "before 1970"),
        (datetime(2300, 1, 1, tzinfo=timezone.utc), "in the future"),
        (10**17, "in the future"),
        (True, "not True"),
        ("2024-01-01", "not str"),
    ],
)
def test_timestamps_out_of_range_or_of_the_wrong_type(server, opts, df, stamp, words):
    with pytest.raises(ConfigError, match=words):
        SongbirdWriter(**opts).option(dataset_timestamp=stamp)
    with pytest.raises(ConfigError, match=words):
        publish(why.log(df), dataset_timestamp=stamp, **opts)
    assert_nothing_on(server)


def test_profile_with_its_own_timestamp_before_1970(server, opts, df):
    results = why.log(df)
    results.profile().set_dataset_timestamp(datetime(1965, 6, 1, tzinfo=timezone.utc))
    ok, message = results.writer("songbird").option(**opts).write()
    assert ok is False and "before 1970" in message
    assert_nothing_on(server)


# -- aliases ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, words", [("", "non-empty"), ("   ", "non-empty"), ("x" * 1000, "at most 256 characters, not 1000")]
)
def test_bad_aliases(server, opts, df, alias, words):
    with pytest.raises(ConfigError, match=words):
        why.log(df).writer("songbird").option(reference_profile_name=alias, **opts)
    with pytest.raises(ConfigError, match=words):
        publish_references({"good": why.log(df), alias: why.log(df)}, **opts)
    with pytest.raises(ConfigError, match=words):
        publish(why.log(df), reference_profile_name=alias, **opts)
    assert_nothing_on(server)


SPECIAL_ALIASES = ["réf-数据-🚀", "a&b=c", "train/2024", "what?", "#1", "50% & more/?#=,+ ~"]


def test_unicode_and_url_special_aliases_work_end_to_end(server, opts, df):
    for alias in SPECIAL_ALIASES[:2]:  # through the writer, one at a time
        ok, url = why.log(df).writer("songbird").option(reference_profile_name=alias, **opts).write()
        assert ok is True, url
        assert alias in page_text(url)
    # ... and all of them in one batch call
    result = publish_references({alias: why.log(df) for alias in SPECIAL_ALIASES}, **opts)
    assert result.ok and [p.alias for p in result.profiles] == SPECIAL_ALIASES
    stored = {record.id: record for record in server.store.list_profiles(result.session_id)}
    for p in result.profiles:
        assert stored[p.profile_id].alias == p.alias  # stored under exactly that name
        text = page_text(p.observatory_url)  # its own link opens it and names it
        assert p.alias in text
        assert not [other for other in SPECIAL_ALIASES if other != p.alias and f">{other}<" in text]
    for link in result.observatory_urls:  # combined links (<= 3 profiles each) open too
        page_text(link)


# -- segments --------------------------------------------------------------------------------

SEGMENT_VALUES = ["zürich & co", "a/b?c#d", "x=1,y=2", "東京 🚀", "100%", "a+b c"]


def test_unicode_and_url_special_segment_values_keep_links_valid(server, opts):
    frame = pd.DataFrame({"x": [float(i) for i in range(len(SEGMENT_VALUES))], "city": SEGMENT_VALUES})
    results = why.log(frame, schema=DatasetSchema(segments=segment_on_column("city")))
    writer = results.writer("songbird").option(**opts)
    ok, pairs = writer.write()
    assert ok is True and len(pairs) == len(SEGMENT_VALUES)
    stored = server.store.list_profiles(writer._writer.last_result.session_id)
    assert sorted(r.segment_tags for r in stored) == sorted((("city", v),) for v in SEGMENT_VALUES)
    shown = set()
    for _, url in pairs:
        text = page_text(url)
        [value] = [v for v in SEGMENT_VALUES if segment_label([("city", v)]) in text]  # its own segment only
        shown.add(value)
    assert shown == set(SEGMENT_VALUES)


# -- where to publish ------------------------------------------------------------------------


@pytest.mark.parametrize("session_id", ["../../etc/passwd", "session-1/upload", "a?b", "..", "session#x", "a b"])
def test_session_id_with_path_characters(server, opts, df, monkeypatch, session_id):
    with pytest.raises(ConfigError, match="not a valid session id"):
        why.log(df).writer("songbird").option(session_id=session_id, **opts)
    with pytest.raises(ConfigError, match="not a valid session id"):
        publish_references({"a": why.log(df)}, session_id=session_id, **opts)
    monkeypatch.setenv("SONGBIRD_SESSION_ID", session_id)
    with pytest.raises(ConfigError, match="not a valid session id"):
        SongbirdWriter(**opts)  # options are checked with the environment, at once
    for name, value in (("SONGBIRD_API_ENDPOINT", server.url), ("SONGBIRD_CONFIG_DIR", opts["config_dir"])):
        monkeypatch.setenv(name, value)
    ok, message = why.log(df).writer("songbird").write()  # no options: checked at write time
    assert ok is False and "not a valid session id" in message
    assert_nothing_on(server)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8787", "localhost", "ftp://127.0.0.1", "http://", " "])
def test_endpoint_without_a_scheme(tmp_path, df, monkeypatch, endpoint):
    with pytest.raises(ConfigError, match="endpoint"):
        why.log(df).writer("songbird").option(endpoint=endpoint)
    with pytest.raises(ConfigError, match="endpoint"):
        publish_references({"a": why.log(df)}, endpoint=endpoint, config_dir=str(tmp_path))
    if endpoint.strip():
        monkeypatch.setenv("SONGBIRD_API_ENDPOINT", endpoint)
        monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path))
        ok, message = why.log(df).writer("songbird").write()
        assert ok is False and "not an http(s) URL" in message and "with its scheme" in message


# -- servers that answer badly ---------------------------------------------------------------

SESSION = b'{"id": "session-scriptedscriptedscripted"}'


class _BadServer(http.server.BaseHTTPRequestHandler):
    """Answers create_session properly, and every other request with ``answer``."""

    answer: tuple[int, dict, bytes, int | None] = (200, {}, b"", None)
    seen: list

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.path)
        if self.path == "/v0/sessions":
            status, headers, body, length = 200, {"Content-Type": "application/json"}, SESSION, None
        else:
            status, headers, body, length = type(self).answer
        send_answer(self, status, headers, body, length=length)  # a larger length: a truncated body, then the close

    do_PUT = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def bad_server():
    handler = type("Handler", (_BadServer,), {"seen": []})
    with http_server_thread(handler) as url:
        yield handler, url


JSON = {"Content-Type": "application/json"}
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>nginx</body></html>"


@pytest.mark.parametrize(
    "answer, words, kept",
    [
        ((200, JSON, b"{not json", None), "not JSON ({not json); check that the endpoint is a songbird API", False),
        ((200, JSON, b'{"id": 5}', None), "does not match the songbird contract", False),
        ((200, JSON, b'{"id": "log-x", "uploadU', 200), "broke off before its end", True),
        ((200, {"Content-Type": "text/html"}, HTML_PAGE, None), "not JSON (an HTML page: 502 Bad Gateway)", False),
        ((502, {"Content-Type": "text/html"}, HTML_PAGE, None), "answered 502: an HTML page: 502 Bad Gateway", True),
    ],
)
def test_server_answering_garbage(bad_server, tmp_path, df, answer, words, kept):
    handler, url = bad_server
    handler.answer = answer
    outbox_dir = tmp_path / "outbox"
    opts = {"endpoint": url, "config_dir": str(tmp_path / "config"), "outbox_dir": str(outbox_dir)}
    opts.update(max_retries=1, backoff=0.01)
    writer = SongbirdWriter(**opts)
    ok, message = writer.write(why.log(df))
    assert ok is False and words in message, message
    assert "<html>" not in message and "Traceback" not in message
    assert writer.last_result.landed == []
    with pytest.raises(PublishError, match="0 of 2") as info:
        publish_references({"a": why.log(df), "b": why.log(df)}, **opts)
    assert all(words in p.error for p in info.value.result.profiles)
    # Nothing is lost: what might work later is kept in the outbox, what never will is not.
    assert len(Outbox(outbox_dir)) == (3 if kept else 0)
    if kept:
        assert "saved to the outbox" in message
