"""A progress bar for long runs over many files, shown only to a person at a terminal.

Scripts see nothing: the bar is off in ``--json`` mode and whenever stdout is not a TTY, and it
draws on stderr so stdout stays one clean document.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

T = TypeVar("T")

# Below this many items a bar is just flicker.
MIN_ITEMS = 20


def wants_progress(json_mode: bool) -> bool:
    """True when a person is watching: not --json, and stdout and stderr are terminals."""
    if json_mode:
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def make_progress(enabled: bool) -> Callable[[Iterable[Any], str], Iterable[Any]]:
    """A `progress(items, label)` wrapper: a click bar when enabled, else the items as they are."""
    if not enabled:
        return lambda items, label: items

    def progress(items: Iterable[T], label: str) -> Iterator[T]:
        seq = list(items)
        if len(seq) < MIN_ITEMS:
            yield from seq
            return
        with click.progressbar(seq, label=label, file=sys.stderr, show_pos=True) as bar:
            yield from bar

    return progress
