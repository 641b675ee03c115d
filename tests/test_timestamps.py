"""The stored timestamp format: fixed width, sortable, the same text datetime would give."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

from plandb.timestamps import normalize, now

STORED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


def test_now_is_the_stored_format_and_falls_between_two_datetime_readings():
    """now() formats each second once and adds the microseconds itself; its text must be what
    datetime.strftime gives for the same instant (it sorts between two such readings)."""
    for _ in range(2000):
        before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stamp = now()
        after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert STORED.match(stamp), stamp
        assert before <= stamp <= after
        assert normalize(stamp) == stamp


def test_now_from_many_threads_never_pairs_a_second_with_another_seconds_text():
    bad: list[str] = []

    def stamp_many() -> None:
        for _ in range(5000):
            before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            stamp = now()
            after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if not before <= stamp <= after:
                bad.append(stamp)

    threads = [threading.Thread(target=stamp_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
