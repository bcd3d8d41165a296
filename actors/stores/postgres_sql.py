"""The PostgreSQL store's statements (`postgres.py` runs them): every one names its schema as
`{s}`, which the store fills in with its quoted schema name (`PostgresStore._q`), and takes its
values as psycopg parameters, never formatted in. Kept apart so that the store's logic reads in
one file and its SQL in another; the limits' statements are in `postgres_limits.py`.
"""

from __future__ import annotations

_LIVE = "('queued', 'running', 'retrying', 'waiting')"
_RUN_COLUMNS = (
    "id, job, status, input, output, priority, attempts, max_attempts, timeout, created_at, scheduled_at, "
    "started_at, finished_at, error_type, message, traceback, progress, progress_message, metadata, "
    "version, key, rerun_of, parent_id, tenant, wait, current_step"
)
# Whether a run's attempt {number} ended interrupted (a primary-key lookup per run).
_LAST_INTERRUPTED = ("EXISTS (SELECT 1 FROM {s}.attempts AS a WHERE a.run_id = r.id AND a.number = {number} "
                     "AND a.outcome = 'interrupted')")
_READY_COLUMNS = ("r.id, r.job, r.input, r.priority, r.attempts, r.free_attempts, r.max_attempts, r.timeout, "
                  "r.scheduled_at, r.status, r.version, " + _LAST_INTERRUPTED.replace("{number}", "r.attempts")
                  + ", r.tenant")
# An incarnation is live while it has not stopped and its lease is younger than %(lease)s seconds.
_LIVE_INCARNATION = "i.stopped_at IS NULL AND i.beat >= now() - make_interval(secs => %(lease)s)"

# -- the statements, one per intent ({s}: the schema) -------------------------------------------

_INSERT = ("INSERT INTO {s}.runs (job, status, input, priority, max_attempts, timeout, created_at, scheduled_at, "
           "version, key, unique_key, rerun_of, parent_id, tenant, metadata) VALUES (%s, 'queued', %s, %s, %s, %s, %s, %s, "
           "%s, %s, %s, %s, %s, %s, %s) ")
# a batch without keys: one statement; ids are drawn in the order of the rows
_INSERT_MANY = (
    "INSERT INTO {s}.runs (job, status, input, priority, max_attempts, timeout, created_at, scheduled_at, version, "
    "rerun_of) SELECT b.job, 'queued', b.input, b.priority, b.max_attempts, b.timeout, %s, b.scheduled_at, "
    "b.version, b.rerun_of FROM unnest(%s::text[], %s::text[], %s::integer[], %s::integer[], "
    "%s::double precision[], %s::double precision[], %s::integer[], %s::bigint[]) WITH ORDINALITY "
    "AS b(job, input, priority, max_attempts, timeout, scheduled_at, version, rerun_of, n) ORDER BY b.n RETURNING id"
)
_KEYED = "SELECT id, status FROM {s}.runs WHERE job = %s AND key = %s"
_UNIQUE_LIVE = f"SELECT id FROM {{s}}.runs WHERE job = %s AND unique_key = %s AND status IN {_LIVE}"
_TAKE_KEY = "UPDATE {s}.runs SET key = NULL WHERE id = %s AND key = %s"
# a debounced submit (see `Store.insert`): the key's run takes the later input while it is
# queued, never attempted and not due (a claim meanwhile makes this change nothing)
_DEBOUNCE = ("UPDATE {s}.runs SET input = %s, scheduled_at = %s, priority = %s, timeout = %s, metadata = %s, "
             "tenant = %s WHERE id = %s AND status = 'queued' AND attempts = 0 AND scheduled_at > %s")

_DUPLICATE_ADOPT = (f"SELECT 1 FROM {{s}}.runs AS o, {{s}}.runs AS r WHERE r.id = %(id)s AND o.job = r.job "
                    f"AND o.unique_key = %(key)s AND o.status IN {_LIVE} AND o.id <> %(id)s")
# Every supervisor that loads a run submitted by name adopts it, in its turn's transaction,
# which also holds the rows it claims and finishes: a row another transaction holds is skipped
# (SKIP LOCKED), never waited for (two such turns would wait on each other: a deadlock). The
# holder adopts it itself, or had (it loaded the run too), or is ending it.
_CANCEL_DUPLICATE = ("UPDATE {s}.runs SET status = 'cancelled', finished_at = %s, error_type = 'DuplicateRun', "
                     "message = %s WHERE id = (SELECT id FROM {s}.runs WHERE id = %s AND status IN ('queued', "
                     "'retrying') FOR UPDATE SKIP LOCKED)")
_ADOPT = ("UPDATE {s}.runs SET version = %s, unique_key = %s "
          "WHERE id = (SELECT id FROM {s}.runs WHERE id = %s AND version = 0 FOR UPDATE SKIP LOCKED)")
# ... and those without a unique key (no conflict is possible), all in one statement
_ADOPT_MANY = ("WITH a AS (SELECT * FROM unnest(%s::bigint[], %s::integer[]) AS a(id, version)), "
               "free AS (SELECT r.id FROM {s}.runs AS r JOIN a ON r.id = a.id WHERE r.version = 0 "
               "FOR UPDATE OF r SKIP LOCKED) "
               "UPDATE {s}.runs AS r SET version = a.version FROM a JOIN free ON free.id = a.id WHERE r.id = a.id")
# The claim: rows in their expected attempt, still waiting, not being claimed by another
# supervisor at this moment (SKIP LOCKED: that one wins and this claim is lost, without a wait).
_CLAIMABLE = (
    "WITH wanted AS (SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS w(id, attempt)), "
    "claimable AS (SELECT r.id FROM {s}.runs AS r JOIN wanted AS w ON r.id = w.id AND r.attempts = w.attempt - 1 "
    "WHERE r.status IN ('queued', 'retrying') FOR UPDATE OF r SKIP LOCKED)"
)
_CLAIMED = ("UPDATE {s}.runs AS r SET status = 'running', attempts = r.attempts + 1, started_at = %(now)s, "
            "owner = %(owner)s FROM claimable AS c WHERE r.id = c.id RETURNING r.id")
_CLAIM = f"{_CLAIMABLE} {_CLAIMED}"
# The claim done again after a COMMIT whose outcome is unknown (the connection broke during
# it): a run that the lost COMMIT did claim is running in that attempt under this owner, and is
# won too (the last SELECT reads the snapshot from before the UPDATE: no row comes twice).
_CLAIM_AGAIN = (
    f"{_CLAIMABLE}, claimed AS ({_CLAIMED}) SELECT id FROM claimed UNION ALL SELECT r.id FROM {{s}}.runs AS r "
    "JOIN wanted AS w ON r.id = w.id AND r.attempts = w.attempt "
    "WHERE r.status = 'running' AND r.owner IS NOT DISTINCT FROM %(owner)s"
)
# The fence of every finishing write: the attempt is still running and still ours.
_FENCE = "r.status = 'running' AND r.owner IS NOT DISTINCT FROM %(owner)s"
_UNCLAIM = (
    "UPDATE {s}.runs AS r SET status = 'queued', attempts = r.attempts - 1 "
    "FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS u(id, attempt) "
    f"WHERE r.id = u.id AND r.attempts = u.attempt AND {_FENCE}"
)
# The hot path's successes of one turn, set-based. A succeeded attempt is the run's last: it is
# described by the run's own row rather than by a row in `attempts` (as in SQLite).
_SUCCEED = (
    "UPDATE {s}.runs AS r SET status = 'succeeded', output = b.output, finished_at = %(now)s, error_type = NULL, "
    "message = NULL, traceback = NULL, worker_pid = b.pid, peak_rss = b.rss "
    "FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(outputs)s::text[], %(pids)s::integer[], "
    "%(rss)s::bigint[]) AS b(id, attempt, output, pid, rss) "
    f"WHERE r.id = b.id AND r.attempts = b.attempt AND {_FENCE} RETURNING r.id"
)
_FINISH = (
    "UPDATE {s}.runs AS r SET status = %(status)s, output = %(output)s, finished_at = %(finished_at)s, "
    "error_type = %(error_type)s, message = %(message)s, traceback = %(traceback)s, "
    "scheduled_at = coalesce(%(retry_at)s, r.scheduled_at), free_attempts = r.free_attempts + %(free)s "
    f"WHERE r.id = %(id)s AND r.attempts = %(attempt)s AND {_FENCE} RETURNING r.id"
)
_ATTEMPT = (
    "INSERT INTO {s}.attempts (run_id, number, started_at, finished_at, outcome, error_type, message, traceback, "
    "worker_pid, exit_code, signal, peak_rss) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (run_id, number) DO UPDATE SET started_at = EXCLUDED.started_at, "
    "finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, error_type = EXCLUDED.error_type, "
    "message = EXCLUDED.message, traceback = EXCLUDED.traceback, worker_pid = EXCLUDED.worker_pid, "
    "exit_code = EXCLUDED.exit_code, signal = EXCLUDED.signal, peak_rss = EXCLUDED.peak_rss"
)
_REQUEUE = "UPDATE {s}.runs SET status = 'queued' WHERE id = ANY(%s::bigint[]) AND status = 'retrying'"
_END = ("UPDATE {s}.runs SET status = %s, finished_at = %s, error_type = %s, message = %s "
        "WHERE id = %s AND status IN ('queued', 'retrying')")
# steps and progress of a run go in only while its attempt is ours (steps of a rescued run are
# the new owner's to write)
_STEP = ("INSERT INTO {s}.steps (run_id, name, value, position) SELECT %(id)s, %(name)s, %(value)s, %(position)s "
         "WHERE EXISTS (SELECT 1 FROM {s}.runs AS r WHERE r.id = %(id)s AND r.owner IS NOT DISTINCT FROM %(owner)s) "
         "ON CONFLICT (run_id, name) DO UPDATE SET value = EXCLUDED.value, "
         "position = coalesce(EXCLUDED.position, {s}.steps.position)")
_PROGRESS = (
    "UPDATE {s}.runs AS r SET progress = coalesce(%(fraction)s, r.progress), "
    "progress_message = coalesce(%(message)s, r.progress_message), "
    "metadata = CASE WHEN %(metadata)s::text IS NULL THEN r.metadata "
    "ELSE (coalesce(r.metadata, '{{}}')::jsonb || %(metadata)s::jsonb)::text END "
    "WHERE r.id = %(id)s AND r.owner IS NOT DISTINCT FROM %(owner)s"
)

_BEGIN = ("INSERT INTO {s}.incarnations (pid, host, started_at, heartbeat_at) VALUES (%s, %s, %s, %s) "
          "RETURNING id")
# The heartbeat, with what the supervisor writes of itself; says whether the lease had lapsed
# before it (the supervisor was frozen or cut off: its runs may have been rescued).
_BEAT = (
    "UPDATE {s}.incarnations AS i SET beat = now(), pid = %(pid)s, host = %(host)s, started_at = %(started_at)s, "
    "heartbeat_at = %(heartbeat_at)s, workers = %(workers)s, restarts = %(restarts)s, kills = %(kills)s, "
    "stopped_at = %(stopped_at)s FROM {s}.incarnations AS old WHERE i.id = %(id)s AND old.id = i.id "
    "RETURNING old.beat < now() - make_interval(secs => %(lease)s)"
)
_STOP = "UPDATE {s}.incarnations SET stopped_at = coalesce(stopped_at, %s) WHERE id = %s"
_CLEAR_WORKERS = "DELETE FROM {s}.workers WHERE incarnation = %s"
_WORKER = ("INSERT INTO {s}.workers (incarnation, slot, pid, run_id, job, busy_since, rss, started_at, restarts, "
           "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
# The rescue: running runs whose owner is no live incarnation (stopped, lease lapsed, none),
# never our own, a batch at a time (SKIP LOCKED: rows another rescuer holds are its to rescue).
_RESCUE = (
    "WITH victims AS (SELECT r.id, r.attempts, r.started_at, "
    + _LAST_INTERRUPTED.replace("{number}", "r.attempts - 1") + " AS again "
    "FROM {s}.runs AS r WHERE r.status = 'running' AND r.owner IS DISTINCT FROM %(me)s "
    f"AND NOT EXISTS (SELECT 1 FROM {{s}}.incarnations AS i WHERE i.id = r.owner AND {_LIVE_INCARNATION}) "
    "ORDER BY r.id LIMIT %(batch)s FOR UPDATE OF r SKIP LOCKED), "
    "logged AS (INSERT INTO {s}.attempts (run_id, number, started_at, finished_at, outcome, error_type, message) "
    "SELECT v.id, v.attempts, coalesce(v.started_at, %(now)s), %(now)s, 'interrupted', 'Interrupted', "
    "CASE WHEN v.again THEN %(again)s ELSE %(first)s END FROM victims AS v "
    "ON CONFLICT (run_id, number) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, "
    "error_type = EXCLUDED.error_type, message = EXCLUDED.message) "
    "UPDATE {s}.runs AS r SET status = 'queued', owner = NULL, rescued_at = now(), "
    "free_attempts = r.free_attempts + CASE WHEN v.again THEN 0 ELSE 1 END "
    "FROM victims AS v WHERE r.id = v.id RETURNING r.id"
)
_SERVED = f"SELECT EXISTS (SELECT 1 FROM {{s}}.incarnations AS i WHERE {_LIVE_INCARNATION})"

_READY_PAGE = (f"SELECT {_READY_COLUMNS} FROM {{s}}.runs AS r WHERE r.status IN ('queued', 'retrying') "
               "AND r.id > %s ORDER BY r.id LIMIT %s")
_READY_RESCUED = (f"SELECT {_READY_COLUMNS} FROM {{s}}.runs AS r "
                  "WHERE r.rescued_at >= coalesce(%s::timestamptz, '-infinity') AND r.id <= %s "
                  "AND r.status IN ('queued', 'retrying') ORDER BY r.id")
_CANCEL = ("UPDATE {s}.runs SET status = 'cancelled', finished_at = %s, error_type = 'RunCancelled', wait = NULL, "
           "message = CASE status WHEN 'waiting' THEN 'cancelled while waiting' ELSE 'cancelled before it started' END "
           "WHERE id = %s AND status IN ('queued', 'retrying', 'waiting')")
_PURGE = (
    "WITH doomed AS (DELETE FROM {s}.runs WHERE id IN (SELECT id FROM {s}.runs WHERE status = ANY(%s::text[]) "
    "AND finished_at < %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id), "
    "gone_attempts AS (DELETE FROM {s}.attempts WHERE run_id IN (SELECT id FROM doomed)), "
    "gone_steps AS (DELETE FROM {s}.steps WHERE run_id IN (SELECT id FROM doomed)) "
    "SELECT count(*) FROM doomed"
)
# cron ticks only move forward, whichever supervisor writes last
_SET_CRON = ("INSERT INTO {s}.cron (job, last_tick) VALUES (%s, %s) ON CONFLICT (job) DO UPDATE "
             "SET last_tick = greatest({s}.cron.last_tick, EXCLUDED.last_tick)")
