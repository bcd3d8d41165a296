"""Events: named JSON payloads stored by `emit`, that start runs (`trigger=event(...)`) and
wake runs waiting in `ctx.wait_for_event`.

An event is stored durably (the `events` table) before `emit` returns, and matched in the
store, not only against live listeners: a wait is matched against the events already stored
when it is recorded (those emitted since its run was created), and a serving supervisor
matches each new event against the waits it holds and starts the triggered runs, then marks
the event handled. So an event emitted between a wait being recorded and the supervisor
learning of it is never missed. One event wakes every wait it matches.

Events are kept EVENT_DAYS days (a supervisor deletes older ones when it starts serving), so
a wait matches an event at most that old.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EVENT_DAYS = 7
MAX_PAYLOAD = 1 << 20  # bytes of JSON in one event


@dataclass(frozen=True, slots=True)
class Trigger:
    """`event(name, transform=...)`: a job option that starts a run per event `name`."""

    name: str
    transform: Callable[[Any], Any] | None = None

    def input_of(self, payload: Any) -> Any:
        return payload if self.transform is None else self.transform(payload)


def event(name: str, transform: Callable[[Any], Any] | None = None) -> Trigger:
    """Start a run of the job for each event `name`: `@job(trigger=event("uploaded",
    transform=lambda p: Thumb(src=p["path"])))`. `transform` makes the run's input from the
    payload (default: the payload itself); one that raises or gives an invalid input is logged
    and that event starts no run. Each event starts one run of each job it triggers, even when
    supervisors restart (its idempotency key is `event:<id>`)."""
    check_name(name)
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable, got {transform!r}")
    return Trigger(name, transform)


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"invalid event name {name!r}: expected a non-empty string of at most 200 characters")


def payload_json(name: str, payload: Any) -> str:
    """The payload as JSON text, or a clear error naming the event."""
    check_name(name)
    try:
        text = json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the payload of event {name!r} cannot be stored as JSON: {exc}") from exc
    if len(text) > MAX_PAYLOAD:
        raise ValueError(f"the payload of event {name!r} is {len(text)} bytes of JSON, over {MAX_PAYLOAD}: "
                         "send a path or an id instead")
    return text


def matches(match: dict[str, Any], payload: Any) -> bool:
    """Whether `payload` holds every item of `match` (an empty match takes any payload)."""
    if not match:
        return True
    return isinstance(payload, dict) and all(key in payload and payload[key] == value for key, value in match.items())
