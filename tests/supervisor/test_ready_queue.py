"""The ready queue pops by (priority desc, due time, id), whatever order tickets arrive in."""

from __future__ import annotations

import random

from pydantic import BaseModel

from actors import job
from actors.supervisor.dispatch import ReadyQueue, Ticket


class N(BaseModel):
    x: int = 0


@job
def noop(n: N) -> int:
    return n.x


def ticket(run_id: int, priority: int = 0, due: float = 0.0) -> Ticket:
    return Ticket(run_id, noop, "{}", priority, 0, 0, 1, None, due)


def test_pops_in_priority_then_due_then_id_order_for_any_arrival_order():
    rng = random.Random(7)
    tickets = [ticket(i, rng.choice([-10, 0, 0, 0, 10]), rng.choice([1.0, 2.0, 3.0])) for i in range(1, 400)]
    queue = ReadyQueue()
    for t in sorted(tickets, key=lambda t: t.id)[:200] + rng.sample(tickets[199:], len(tickets) - 199):
        queue.push(t)
    popped = [queue.pop() for _ in range(len(queue))]
    assert [t.id for t in popped] == [t.id for t in sorted(tickets, key=lambda t: (-t.priority, t.scheduled_at, t.id))]
    assert not queue


def test_a_ticket_is_never_queued_twice():
    queue = ReadyQueue()
    one = ticket(1)
    queue.push(one)
    queue.push(one)
    assert len(queue) == 1 and queue.pop() is one and not queue
