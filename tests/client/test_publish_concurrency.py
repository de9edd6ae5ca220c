"""The PUTs of one publish run in parallel (bounded by ``max_workers``), measured, not assumed.

A loopback `Relay` in front of a real server holds every PUT until the expected number of PUTs
arrived (or a short timeout passed) and records the most PUTs it ever held at once.
"""

import threading

import pandas as pd
import whylogs as why
from loopback import Relay, Rendezvous
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird import publish, publish_references


def hold_puts(rendezvous):
    def hook(method, path):
        if method == "PUT":
            rendezvous.wait()
        return None

    return hook


def four_segments():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], "city": list("abcdabcd")})
    return why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))


def test_the_puts_of_segments_run_at_the_same_time(server, tmp_path):
    relay = Relay(server.url, hold_puts(Rendezvous(parties=4, timeout=10.0)))
    with relay.running():
        result = publish(four_segments(), endpoint=relay.url, config_dir=str(tmp_path / "config"))
    assert result.ok and len(result.profiles) == 4
    assert relay.count("put") == 4
    assert relay.peak_in_flight["put"] == 4


def test_the_puts_of_a_reference_batch_run_at_the_same_time(server, tmp_path):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    relay = Relay(server.url, hold_puts(Rendezvous(parties=4, timeout=10.0)))
    with relay.running():
        result = publish_references(
            {name: why.log(df) for name in ("a", "b", "c", "d")},
            endpoint=relay.url,
            config_dir=str(tmp_path / "config"),
        )
    assert result.ok and relay.count("references") == 1 and relay.count("put") == 4
    assert relay.peak_in_flight["put"] == 4


def test_max_workers_bounds_the_puts_in_flight(server, tmp_path):
    # three may never meet with two workers: each pair is held together until the timeout
    relay = Relay(server.url, hold_puts(Rendezvous(parties=3, timeout=3.0)))
    with relay.running():
        result = publish(four_segments(), endpoint=relay.url, config_dir=str(tmp_path / "config"), max_workers=2)
    assert result.ok and relay.count("put") == 4
    assert relay.peak_in_flight["put"] == 2


def test_a_combined_link_is_asked_for_while_other_puts_are_still_running(server, tmp_path):
    """Six references make two links of three. The first PUT to arrive is held until a link request
    comes: only a publish that asks for each chunk's link as soon as that chunk landed sends one
    while a PUT is still unanswered (one that waits for every PUT would sit out the hold)."""
    link_asked = threading.Event()
    held = threading.Lock()
    seen_during_hold: list[bool] = []

    def hook(method, path):
        if path.startswith("/v0/sessions/observatory-link/"):
            link_asked.set()
        elif method == "PUT" and held.acquire(blocking=False):  # the first PUT only
            seen_during_hold.append(link_asked.wait(timeout=10.0))
        return None

    df = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    relay = Relay(server.url, hook)
    with relay.running():
        result = publish_references(
            {name: why.log(df) for name in "abcdef"}, endpoint=relay.url, config_dir=str(tmp_path / "config")
        )
    assert result.ok and relay.count("put") == 6
    assert seen_during_hold == [True]
    assert len(result.observatory_urls) == 2 and relay.count("link") == 2
