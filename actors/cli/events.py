"""`actors emit`: storing an event from the command line.

The event is stored durably through `Client.emit` before the command returns, so it is never
lost: the serving supervisor matches it against the runs waiting in `ctx.wait_for_event` and
starts the runs it triggers (`trigger=event(...)`) when it next polls the store (50 ms by
default); with no supervisor serving, the next one to serve this store does (events are kept
`actors.events.EVENT_DAYS` days). The command writes to the store and asks no live process.

PAYLOAD is JSON text, or `-` to read it from stdin; without one the payload is JSON null, as
`Client.emit(name)` stores it (a wait with a `match` never takes a null payload).
"""

from __future__ import annotations

import sys

import click

from ..events import check_name, payload_json
from . import output
from .common import config_option, json_option, open_client, store_option
from .errors import CliError
from .submit import parse_json


@click.command()
@click.argument("name")
@click.argument("payload", required=False)
@store_option
@config_option
@json_option
def emit(name: str, payload: str | None, store: str | None, config_path: str | None, as_json: bool) -> None:
    """Store event NAME with PAYLOAD (JSON, or - for stdin; default null): it wakes the runs
    waiting for it (`ctx.wait_for_event`) and starts the runs it triggers. Prints its id.

    \b
    actors emit approved '{"fingerprint": "9f2c...", "by": "ann"}' --store workflow.db
    """
    try:
        check_name(name)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if payload == "-":
        payload = sys.stdin.read()
    data = None if payload is None else parse_json(payload, "payload")
    try:
        payload_json(name, data)  # refused here, before the store is opened: NaN, too big
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    client, _ = open_client(store, None, config_path)
    with client:
        event_id = client.emit(name, data)
        serving = client.serving()
    where = "the serving supervisor wakes the runs waiting for it" if serving else (
        "no supervisor serves this store now: the next one to serve it wakes the runs waiting for it")
    output.line(f"event {event_id} ({name}) stored: {where}", as_json=as_json,
                data={"event": event_id, "name": name, "payload": data, "serving": serving})
