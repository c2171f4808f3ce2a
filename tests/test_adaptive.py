"""Adaptive polling (issue 16, item 3): the pure policy (backs off when idle, speeds up on
changes, never above the share of a limit), the daemon's poller over it, and the wiring from
the config."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from sync.adaptive import AdaptivePolicy, Limit
from sync.commands.run import poll_policies, scheduled_profiles
from sync.config import ConfigError, load_config
from sync.daemon import AdaptivePoller

GHL_BURST = Limit(100, 10.0)
GHL_DAILY = Limit(200_000, 86_400.0)


def test_backs_off_when_idle_up_to_the_maximum() -> None:
    p = AdaptivePolicy(min_interval_s=2, max_interval_s=60, max_budget_share=0.2, limits=(GHL_BURST, GHL_DAILY))
    first = p.interval
    intervals = [p.observe(0, 1) for _ in range(10)]
    assert intervals == sorted(intervals) and intervals[0] > first
    assert intervals[-1] == 60


def test_speeds_up_at_once_on_changes() -> None:
    p = AdaptivePolicy(min_interval_s=2, max_interval_s=60, max_budget_share=0.2, limits=(GHL_BURST, GHL_DAILY))
    for _ in range(10):
        p.observe(0, 1)
    assert p.interval == 60
    assert p.observe(5, 1) == p.floor() < 60
    # GoHighLevel's daily budget is the binding one: 200,000/day at 20% is ~0.46 requests/s.
    assert p.floor() == pytest.approx(1 / (200_000 / 86_400 * 0.2), rel=0.05)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_never_above_the_share_of_any_limit(share: float) -> None:
    burst = Limit(10, 1.0)
    p = AdaptivePolicy(min_interval_s=0.01, max_interval_s=1, max_budget_share=share, limits=(burst,))
    for i in range(200):
        # Busy polls that take several pages; changes every time.
        p.observe(changes=10, requests=1 + i % 7)
        assert p.polls_per_second() <= share * burst.per_second + 1e-9
    # The share wins over max_interval_s when the two disagree.
    heavy = AdaptivePolicy(min_interval_s=0.01, max_interval_s=1, max_budget_share=0.01, limits=(Limit(1, 1.0),))
    assert heavy.observe(0, 5) > 1


def test_what_is_left_of_the_day_slows_polling() -> None:
    p = AdaptivePolicy(min_interval_s=1, max_interval_s=600, max_budget_share=0.2, limits=(GHL_BURST, GHL_DAILY))
    relaxed = p.observe(1, 1)
    tight = p.observe(1, 1, daily_remaining=100, seconds_to_reset=3_600)
    assert tight > relaxed
    assert tight == pytest.approx(p.cost / (100 / 3_600 * 0.2))


def test_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        AdaptivePolicy(max_budget_share=0)
    with pytest.raises(ValueError):
        AdaptivePolicy(min_interval_s=10, max_interval_s=5)


def test_poller_polls_only_due_connections_and_adapts() -> None:
    now = [0.0]
    calls: list[list[str]] = []
    changes = {"busy": 3, "idle": 0}

    def poll(profile: str, due: list[str], stop: threading.Event) -> dict[str, tuple[int, int]]:
        calls.append(list(due))
        return {n: (changes[n], 1) for n in due}

    policies = {n: AdaptivePolicy(min_interval_s=1, max_interval_s=32) for n in ("busy", "idle")}
    poller = AdaptivePoller(policies, poll, clock=lambda: now[0])
    stop = threading.Event()
    polled = {"busy": 0, "idle": 0}
    while now[0] < 120:
        for n in poller.tick("default", stop):
            polled[n] += 1
        now[0] += 0.5
    assert polled["busy"] > 100  # every second while changes come
    assert polled["idle"] < 12  # 1, 2, 4, ... 32 s
    assert all(len(c) >= 1 for c in calls)
    # A skipped poll (a full cycle held the lock) changes nothing: tried again next tick.
    poller2 = AdaptivePoller(policies, lambda *a: None, clock=lambda: now[0] + 1_000)
    assert poller2.tick("default", stop) == []


def test_poller_lanes_tick_apart() -> None:
    """A long full scan polls in a lane of its own: a tick of one lane never polls the other's
    connections, so the daemon's thread per lane keeps the quick polls going meanwhile."""
    now = [10.0]
    calls: list[list[str]] = []

    def poll(profile: str, due: list[str], stop: threading.Event) -> dict[str, tuple[int, int]]:
        calls.append(list(due))
        return dict.fromkeys(due, (1, 1))

    policies = {n: AdaptivePolicy(min_interval_s=1, max_interval_s=8) for n in ("acquire", "ghl", "comm100")}
    poller = AdaptivePoller(
        policies, poll, clock=lambda: now[0], lanes={"acquire": "scan", "ghl": "poll", "comm100": "poll"}
    )
    assert poller.lane_names() == ["poll", "scan"]
    stop = threading.Event()
    now[0] += 2
    assert poller.tick("default", stop, "poll") == ["comm100", "ghl"]
    assert poller.tick("default", stop, "scan") == ["acquire"]
    assert calls == [["comm100", "ghl"], ["acquire"]] and poller.polls == 2
    assert AdaptivePoller(policies, poll).lane_names() == ["default"]


def _config(tmp_path: Path, schedule: dict) -> Path:
    cfg = {
        "connections": {
            "ghl": {
                "platform": "gohighlevel",
                "base_url": "https://services.leadconnectorhq.com",
                "credentials": {"token": "${GHL_TOKEN:-pit-xxxx}"},
                "options": {"location_id": "loc1"},
            },
            "dm": {
                "platform": "dmchamp",
                "base_url": "https://api.dmchamp.com",
                "credentials": {"api_key": "${DM_KEY:-dm-xxxx}"},
            },
        },
        "profiles": {"default": {"schedule": schedule}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_and_wiring(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            {
                "interval_seconds": 300,
                "adaptive": True,
                "min_interval_s": 2,
                "max_interval_s": 120,
                "max_budget_share": 0.1,
            },
        )
    )
    policies = poll_policies(config, "default")
    assert list(policies) == ["ghl"]  # DM Champ cannot be read: never polled
    ghl = policies["ghl"]
    assert ghl.max_budget_share == 0.1 and ghl.max_interval_s == 120
    assert Limit(100, 10.0) in ghl.limits and Limit(200_000, 86_400.0) in ghl.limits
    profiles = scheduled_profiles(config)
    assert profiles[0].interval_seconds == 300 and profiles[0].poller is None  # no engine: no poller
    with pytest.raises(ConfigError, match="min_interval_s"):
        load_config(
            _config(tmp_path, {"interval_seconds": 300, "adaptive": True, "min_interval_s": 9, "max_interval_s": 3})
        )


def test_no_documented_limit_bounds_the_time_spent_polling() -> None:
    """Acquire documents no limit, and each poll is a scan of every page: a poll is repeated
    at most every ``busy / share`` seconds. A platform with a limit keeps its request floor."""
    scan = AdaptivePolicy(min_interval_s=2, max_interval_s=60, max_budget_share=0.2)
    assert scan.observe(5, 100, seconds=3.0) == pytest.approx(15.0)  # 3 s busy at most 20% of the time
    limited = AdaptivePolicy(min_interval_s=2, max_interval_s=60, max_budget_share=0.2, limits=(Limit(100, 10),))
    assert limited.observe(5, 1, seconds=3.0) == 2.0


def test_a_webhook_nudges_the_poll_back_to_its_floor() -> None:
    now = [0.0]
    policies = {"ghl": AdaptivePolicy(min_interval_s=2, max_interval_s=20)}
    poller = AdaptivePoller(policies, lambda p, due, stop: dict.fromkeys(due, (0, 1)), clock=lambda: now[0])
    stop = threading.Event()
    for _ in range(200):  # idle: backs off to 20 s
        poller.tick("default", stop)
        now[0] += 0.5
    assert policies["ghl"].interval == 20.0
    poller.nudge("ghl")
    assert policies["ghl"].interval == 2.0 and poller.due["ghl"] <= now[0] + 2.0
    poller.nudge("unknown")  # a connection not polled: nothing


def test_a_poll_that_says_how_long_its_polling_took_is_timed_by_that() -> None:
    """The wait for the profile and the poll's writes are not polling: a poll result may carry
    the seconds its reading took, which bound a platform with no documented limit."""
    now = [0.0]

    def poll(profile: str, due: list[str], stop: threading.Event) -> dict[str, tuple[int, int, float]]:
        now[0] += 30.0  # waited for the profile, then wrote
        return dict.fromkeys(due, (1, 100, 1.0))

    policies = {"acquire": AdaptivePolicy(min_interval_s=2, max_interval_s=60, max_budget_share=0.2)}
    poller = AdaptivePoller(policies, poll, clock=lambda: now[0])
    now[0] += 3
    assert poller.tick("default", threading.Event()) == ["acquire"]
    assert policies["acquire"].interval == pytest.approx(5.0)  # 1 s of scanning at 20%, not 30 s
