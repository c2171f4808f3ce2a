"""A profile lock given back on one thread while another thread's commit checks the fences (the
daemon's listener storing a webhook while a cycle ends) is not a lost lock: the check found a
closed descriptor once and failed the webhook's commit with LostLock (a 500 to GoHighLevel)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sync.store import Store, locks, upgrade
from sync.store.locks import LostLock


def test_a_check_racing_a_release_never_reports_a_lost_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    store = Store.open(url)
    real_fstat = os.fstat
    in_check = threading.Event()
    errors: list[BaseException] = []

    def slow_fstat(fd: Any) -> Any:
        # The checking thread stops between reading the descriptor and looking at it: the
        # release on the main thread happens right there.
        if threading.current_thread().name == "checker" and not in_check.is_set():
            in_check.set()
            time.sleep(0.3)
        return real_fstat(fd)

    def check() -> None:
        try:
            store.check_locks()
        except LostLock as exc:
            errors.append(exc)

    monkeypatch.setattr(locks.os, "fstat", slow_fstat)
    try:
        lock = store.profile_lock("default")
        assert lock.acquire()
        checker = threading.Thread(target=check, name="checker")
        checker.start()
        assert in_check.wait(5)
        lock.release()
        checker.join(5)
    finally:
        store.close()
    assert not errors, errors[0]
