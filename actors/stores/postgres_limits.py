"""The PostgreSQL store's limits across supervisors: what is enforced where.

Each supervisor keeps its own `Limits` (dispatch.py: it
counts the runs it holds, and parks those that may not start); that alone would let each of
several supervisors run a job's whole allowance. So the store also enforces, in the database,
the limits of the jobs recorded through it (`record_jobs`, which a supervisor calls at each
`serve()` with its own definitions): `concurrency=n` (the runs of the job `running`, in any
supervisor), `concurrency=Limit(n, key="tenant")` (the same per stored tenant; runs without
one share a key), `concurrency=Limit(n, key=<a function of the input>)` (the same per key:
the supervisor computes a run's key when it admits it, and passes it with the claim as JSON
text, `Changes.claim_keys`, the same in every supervisor for one input; the claim writes it
to `runs.limit_key`, which the claims of every supervisor count), and `rate`/`throttle` (at
most N starts in any window of the period, by the database clock: the table `starts` keeps
the recent starts of rate-limited jobs). The store tells the keys apart by the recorded
`concurrency_by` ("tenant", or "input" for a function; jobs recorded before it existed by
`concurrency_key`, where a function named `tenant` would be taken for the tenant). In a turn's transaction, the claim statement claims the runs of unlimited
jobs as before and names the claimable runs of limited ones; those are claimed last in the
transaction (after the turn's finishes, so a run ended in the turn frees its place), under
`pg_advisory_xact_lock` per limited job (taken in name order, held to COMMIT: two
supervisors' claims of one job take turns, and the second counts what the first committed),
as far as the counts allow, in the order asked for. A claim refused by a limit is lost and
named in `Changes.deferred`: the supervisor keeps that run at the head of its line and tries
again after 50 ms, doubling to 1 s while refused (tracker.py `_defer`), or sooner when a run
of that line ends there. A store that records no limited job claims with the one statement
of before; one that does pays, for claims of unlimited jobs, a `job <> ALL(...)` filter. A
run counts as running from its claim (also while it waits in a worker's window) to its end;
one of a dead supervisor counts until it is rescued. Supervisors that serve one job with
different limits each enforce their own against the shared count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..durations import parse_rate
from ..run import JobInfo
from .postgres_sql import _CLAIMABLE, _CLAIMED

if TYPE_CHECKING:
    import psycopg

# The claim while this store knows limited jobs (`StoreLimit`): it claims the runs of the others,
# and names the runs of limited jobs still claimable (job not NULL), which `_CLAIM_LIMITED`
# claims, as their limits allow, once the turn's other writes are done.
_SPARING = _CLAIMABLE.replace("WHERE r.status", "WHERE r.job <> ALL(%(limited)s::text[]) AND r.status")
_CANDIDATES = ("SELECT r.id, r.job FROM {s}.runs AS r JOIN wanted AS w ON r.id = w.id AND r.attempts = w.attempt - 1 "
               "WHERE r.status IN ('queued', 'retrying') AND r.job = ANY(%(limited)s::text[])")
_CLAIM_SPARING = f"{_SPARING}, claimed AS ({_CLAIMED}) SELECT id, NULL::text FROM claimed UNION ALL {_CANDIDATES}"
_CLAIM_AGAIN_SPARING = (
    f"{_SPARING}, claimed AS ({_CLAIMED}) SELECT id, NULL::text FROM claimed UNION ALL SELECT r.id, NULL::text "
    "FROM {s}.runs AS r JOIN wanted AS w ON r.id = w.id AND r.attempts = w.attempt "
    f"WHERE r.status = 'running' AND r.owner IS NOT DISTINCT FROM %(owner)s UNION ALL {_CANDIDATES}"
)
# Taken before a limited job's runs are counted and claimed, held to COMMIT: two supervisors'
# claims of one limited job take turns, and the second counts what the first committed.
_LIMIT_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"
# The claim of limited jobs' runs, under their locks (a statement of its own, so that its
# snapshot sees every claim committed before the lock was ours). In the order asked for, per job
# (or per job and key, `keyed`: the stored tenant, or for 'input' the key passed with the claim,
# which a running run has in `limit_key`): as many as `cap` minus the runs running allows, then as many
# of those as `rate` minus the starts within `period` (by the database clock) allows; the starts
# admitted for a rate are recorded, and the ones older than the window deleted.
_CLAIM_LIMITED = (
    "WITH wanted AS (SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(keys)s::text[]) "
    "WITH ORDINALITY AS w(id, attempt, key, n)), "
    "lim AS (SELECT * FROM unnest(%(jobs)s::text[], %(caps)s::integer[], %(keyed)s::text[], %(rates)s::integer[], "
    "%(periods)s::double precision[]) AS l(job, cap, keyed, rate, period)), "
    "cand AS (SELECT r.id, w.n, r.job, w.key, CASE l.keyed WHEN 'tenant' THEN r.tenant WHEN 'input' THEN w.key END "
    "AS k FROM {s}.runs AS r "
    "JOIN wanted AS w ON r.id = w.id AND r.attempts = w.attempt - 1 JOIN lim AS l ON l.job = r.job "
    "WHERE r.status IN ('queued', 'retrying') FOR UPDATE OF r SKIP LOCKED), "
    "busy AS (SELECT r.job, CASE l.keyed WHEN 'tenant' THEN r.tenant WHEN 'input' THEN r.limit_key END AS k, "
    "count(*) AS c FROM {s}.runs AS r "
    "JOIN lim AS l ON l.job = r.job WHERE r.status = 'running' AND l.cap IS NOT NULL GROUP BY 1, 2), "
    "fits AS (SELECT c.id, c.n, c.job, c.key FROM (SELECT cand.*, row_number() OVER (PARTITION BY cand.job, cand.k "
    "ORDER BY cand.n) AS place FROM cand) AS c JOIN lim AS l ON l.job = c.job LEFT JOIN busy AS b "
    "ON b.job = c.job AND b.k IS NOT DISTINCT FROM c.k WHERE l.cap IS NULL OR c.place <= l.cap - coalesce(b.c, 0)), "
    "recent AS (SELECT s.job, count(*) AS c FROM {s}.starts AS s JOIN lim AS l ON l.job = s.job "
    "WHERE l.rate IS NOT NULL AND s.at > clock_timestamp() - make_interval(secs => l.period) GROUP BY 1), "
    "admitted AS (SELECT f.id, f.job, f.key, l.rate FROM (SELECT fits.*, row_number() OVER (PARTITION BY fits.job "
    "ORDER BY fits.n) AS place FROM fits) AS f JOIN lim AS l ON l.job = f.job LEFT JOIN recent AS x ON x.job = f.job "
    "WHERE l.rate IS NULL OR f.place <= l.rate - coalesce(x.c, 0)), "
    "started AS (INSERT INTO {s}.starts (job, at) SELECT a.job, clock_timestamp() FROM admitted AS a "
    "WHERE a.rate IS NOT NULL), "
    "pruned AS (DELETE FROM {s}.starts AS s USING lim AS l WHERE s.job = l.job AND l.rate IS NOT NULL "
    "AND s.at <= clock_timestamp() - make_interval(secs => l.period)) "
    "UPDATE {s}.runs AS r SET status = 'running', attempts = r.attempts + 1, started_at = %(now)s, "
    "owner = %(owner)s, limit_key = a.key FROM admitted AS a WHERE r.id = a.id RETURNING r.id"
)


class StoreLimit(NamedTuple):
    """A job's limits as this store enforces them across supervisors (`record_jobs`)."""

    cap: int | None  # the most runs running at once (per key when `keyed`), or None
    # the cap's key: None (per job), "tenant" (`Limit(n, key="tenant")`: the stored tenant) or
    # "input" (`Limit(n, key=<a function>)`: the key the supervisor passes with each claim)
    keyed: str | None
    rate: int | None  # the most starts within `period` seconds, or None
    period: float | None


def limits_of(jobs: list[JobInfo]) -> dict[str, StoreLimit]:
    """The limits this store enforces, from the jobs' options (`Job.options()`): `concurrency`
    (per job, per tenant for `Limit(n, key="tenant")`, per key for a `Limit` whose key is a
    function: `concurrency_by` says which) and `rate`/`throttle`, as the
    supervisor's `Limits` reads them (N starts in a window of period * N / count, N = int(count))."""
    limits: dict[str, StoreLimit] = {}
    for j in jobs:
        options = j.options or {}
        cap, key, rate = options.get("concurrency"), options.get("concurrency_key"), options.get("rate")
        keyed = options.get("concurrency_by", None if key is None else "tenant" if key == "tenant" else "input")
        count = period = None
        if rate:
            per, seconds = parse_rate(rate)
            count = max(1, int(per))
            period = seconds * count / per
        if cap is not None or count is not None:
            limits[j.name] = StoreLimit(int(cap) if cap is not None else None, keyed, count, period)
    return limits


class LimitedPostgres:
    """The claims of limited jobs, for `PostgresStore`."""

    counts_limit_keys = True  # the supervisor passes its `Limit` keys with the claims (`Changes.claim_keys`)
    schema: str
    _limits: dict[str, StoreLimit]

    if TYPE_CHECKING:
        def _q(self, statement: str) -> str: ...

    def _claim_limited(self, db: psycopg.Connection[Any], claims: list[tuple[int, int]], limited: dict[int, str],
                       keys: dict[int, str], now: float, owner: int | None) -> set[int]:
        """Claim the runs of limited jobs (`limited`: run id -> job) as far as their limits allow,
        counted in the database under each job's advisory lock (taken in name order: two
        turns never wait on each other in a cycle); `keys`: run id -> its key for a `Limit`
        whose key is a function (`Changes.claim_keys`). The ids claimed."""
        names = sorted(set(limited.values()))
        for name in names:
            db.execute(_LIMIT_LOCK, (f"actors limit {self.schema}.{name}",))
        wanted = [c for c in claims if c[0] in limited]
        limits = [self._limits[name] for name in names]
        rows = db.execute(self._q(_CLAIM_LIMITED), {
            "ids": [c[0] for c in wanted], "attempts": [c[1] for c in wanted],
            "keys": [keys.get(c[0]) for c in wanted], "jobs": names,
            "caps": [x.cap for x in limits], "keyed": [x.keyed for x in limits], "rates": [x.rate for x in limits],
            "periods": [x.period for x in limits], "now": now, "owner": owner}).fetchall()
        return {row[0] for row in rows}
