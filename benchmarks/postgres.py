"""PostgreSQL: actors' PostgresStore beside Procrastinate and PgQueuer, on one local server.

Usage (from the repo root, with a server: `eval "$(.ci/postgres start)"`):
    .venv/bin/python benchmarks/postgres.py [--dsn postgresql://...] [--n 2000] [--quick] [--only actors,pgq]

The DSN is --dsn, else $ACTORS_TEST_POSTGRES. Each system gets a database of its own, made here
and dropped after (actors: a schema per measurement in it). Every worker side is a separate
process started by this script (`--role ...`), the submitter is this process.

- throughput: N no-op runs submitted in one batch (actors `submit_many`, Procrastinate
  `batch_defer`, PgQueuer `enqueue` of lists) to the first submit to the last one recorded
  done in the database, after an un-timed warm batch of 200; median of 3 batches. actors with
  1, 2 and 3 supervisors of 2 worker processes each; Procrastinate and PgQueuer with 1 and 3
  worker processes (Procrastinate `concurrency=2`, PgQueuer its defaults: async no-ops, batches
  of 10). The reference of the ratios is Procrastinate with 1 process.
- claim latency: one run at a time, from before the submit to the job's own first line
  (`time.time()` in the job: same host), p50 and p99 of 30; actors at the default
  `poll_interval` (50 ms) and at 5 ms (the poll is a socket check between notifications).
- rescue (actors): two supervisors, lease 2 s; one holding two 3 s runs is killed with
  SIGKILL; the time from the kill until both run again under the other, minus the lease; then
  duplicate executions: runs whose job ran to its end more than once (a file of lines).

Default N=2000 (about 2 to 3 minutes on 2 cores); --quick uses N=300. The machine is shared:
read the ratios, not the absolute numbers.
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers as P  # noqa: E402

WARM = 200
SUPERVISOR_WORKERS = 2
LATENCY_SAMPLES = 30
LEASE = 2.0
REF = "Procrastinate, 1 process"


# -- the jobs (every role imports this file) ------------------------------------------------

def note(path, *fields):
    """One line appended with one write (lines of several processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())
    finally:
        os.close(fd)


try:  # at the top level: the supervisor's workers import this file again to find them
    from pydantic import BaseModel

    from actors import Context, job

    class Noop(BaseModel):
        x: int

    class Hold(BaseModel):
        log: str
        seconds: float = 0.0

    @job(name="noop")
    def noop(n: Noop) -> int:
        return n.x + 1

    @job(name="stamp")
    def stamp(h: Hold) -> None:
        note(h.log, time.time())

    @job(name="hold")
    def hold(h: Hold, ctx: Context) -> None:
        note(h.log, "start", ctx.run_id, os.getpid())
        time.sleep(h.seconds)
        note(h.log, "end", ctx.run_id, os.getpid())

    ACTORS_JOBS = [noop, stamp, hold]
except ImportError:  # the peers' rows still run
    ACTORS_JOBS = []


def procrastinate_app(dsn, sync):
    import procrastinate

    connector = (procrastinate.SyncPsycopgConnector if sync else procrastinate.PsycopgConnector)(conninfo=dsn)
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop(x):
        return x + 1

    @app.task(name="stamp")
    async def stamp(log):
        note(log, time.time())

    return app


# -- the roles: worker sides in processes of their own ---------------------------------------

def role_actors(dsn, schema, poll):
    from actors import Supervisor
    from actors.stores.postgres import PostgresStore

    store = PostgresStore(dsn, schema=schema, lease=LEASE)
    sup = Supervisor(ACTORS_JOBS, workers=SUPERVISOR_WORKERS, store=store, poll_interval=float(poll))
    sup.serve()
    sup.close()


def role_procrastinate(dsn):
    procrastinate_app(dsn, sync=False).run_worker(concurrency=2, wait=True)


def role_pgqueuer(dsn, log):
    import psycopg
    from pgqueuer import PsycopgDriver, Queries, QueueManager

    async def main():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job):
            return None

        @qm.entrypoint("stamp")
        async def stamp(job):
            note(log, time.time())

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
        await qm.run()

    asyncio.run(main())


ROLES = {"actors": role_actors, "procrastinate": role_procrastinate, "pgqueuer": role_pgqueuer}


LOGS = tempfile.gettempdir()  # where the roles' output goes (main() sets its own directory)


def start(role, *args):
    """A worker side in a process of its own; its output in a file of LOGS (read on failure)."""
    path = os.path.join(LOGS, f"{role}-{uuid.uuid4().hex[:6]}.out")
    with open(path, "wb") as out:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", role, *map(str, args)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [P.ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])})
    proc.output = path
    return proc


def read(path):
    with open(path) as f:
        return f.read()


def lines(path):
    return read(path).splitlines() if os.path.exists(path) else []


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- the database ----------------------------------------------------------------------------

class Server:
    """Databases of the benchmark's own on the server of `dsn`, dropped by `close()`."""

    def __init__(self, dsn):
        import psycopg

        self.dsn, self.made = dsn, []
        self.admin = psycopg.connect(dsn, autocommit=True)
        self.tag = uuid.uuid4().hex[:6]

    def database(self, name):
        import psycopg

        db = f"bench_{name}_{self.tag}"
        self.admin.execute(f'CREATE DATABASE "{db}"')
        self.made.append(db)
        return psycopg.conninfo.make_conninfo(self.dsn, dbname=db)

    def close(self):
        for db in self.made:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.admin.close()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise P.Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.002)


def check(procs):
    """Raise with its output if a worker side died."""
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"a worker process exited ({p.returncode}): {read(p.output)[-600:]}")


def count(conn, sql):
    return conn.execute(sql).fetchone()[0]


# -- the systems: each submits a batch, counts what is done, and runs one at a time ------------

class Actors:
    def __init__(self, dsn, schema, processes, poll=0.05):
        import psycopg

        from actors import Client
        from actors.stores.postgres import PostgresStore

        self.client = Client(PostgresStore(dsn, schema=schema, lease=LEASE))
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.done_sql = f'SELECT count(*) FROM "{schema}".runs WHERE status = \'succeeded\''
        self.procs = [start("actors", dsn, schema, poll) for _ in range(processes)]
        self.submitted = 0

    def batch(self, n):
        self.client.submit_many("noop", [{"x": i} for i in range(n)])
        self.submitted += n
        wait_for(lambda: check(self.procs) or count(self.conn, self.done_sql) >= self.submitted, 120,
                 "the runs to succeed")

    def one(self, log):
        self.client.submit("stamp", {"log": log})

    def close(self):
        stop(self.procs)
        self.client.close()
        self.conn.close()


class Procrastinate:
    def __init__(self, dsn, processes):
        import psycopg

        self.app = procrastinate_app(dsn, sync=True)
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.procs = [start("procrastinate", dsn) for _ in range(processes)]
        self.submitted = 0

    def batch(self, n):
        self.app.tasks["noop"].batch_defer(*[{"x": i} for i in range(n)])
        self.submitted += n
        done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND task_name = 'noop'"
        wait_for(lambda: check(self.procs) or count(self.conn, done) >= self.submitted, 120, "the jobs to succeed")

    def one(self, log):
        self.app.tasks["stamp"].defer(log=log)

    def close(self):
        stop(self.procs)
        self.app.close()
        self.conn.close()


class PgQueuer:
    def __init__(self, dsn, processes, log):
        import psycopg
        from pgqueuer import PsycopgDriver, Queries
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        async def install():
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            await Queries(PsycopgDriver(conn)).install()
            await conn.close()

        asyncio.run(install())
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.queries = SyncQueries(SyncPsycopgDriver(psycopg.connect(dsn, autocommit=True)))
        self.procs = [start("pgqueuer", dsn, log) for _ in range(processes)]

    def batch(self, n):
        self.queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        wait_for(lambda: check(self.procs) or count(self.conn, "SELECT count(*) FROM pgqueuer") == 0, 120,
                 "the queue to empty")

    def one(self, log):
        self.queries.enqueue("stamp", None)

    def close(self):
        stop(self.procs)
        self.conn.close()


def throughput(system, n):
    """tasks/s: the warm batch, then the median of 3 timed ones."""
    system.batch(WARM)
    med, times, _ = P.median_time(system.batch, n)
    return {"tasks_per_s": n / med, "s": med, "times_s": [round(t, 4) for t in times]}


def latency(system, log):
    """p50/p99 of submit -> the job's first line, in ms, one run at a time (after 5 to warm up),
    each submitted at a random moment (0 to 50 ms after the one before ran)."""
    samples = []
    for i in range(LATENCY_SAMPLES + 5):
        time.sleep(random.uniform(0, 0.05))  # submits at random moments, not in step with a poll
        seen = len(lines(log))
        began = time.time()
        system.one(log)
        wait_for(lambda seen=seen: len(lines(log)) > seen, 30, "the job to start")
        if i >= 5:
            samples.append((float(lines(log)[-1].split()[0]) - began) * 1000)
    return {"p50_ms": P.percentile(samples, 50), "p99_ms": P.percentile(samples, 99)}


def rescue(dsn, schema, log):
    """Kill -9 a supervisor holding two runs; seconds from the kill to both running under the
    other supervisor, minus the lease; and runs whose job ran to its end more than once."""
    import psycopg

    from actors import Client
    from actors.stores.postgres import PostgresStore

    client = Client(PostgresStore(dsn, schema=schema, lease=LEASE))
    conn = psycopg.connect(dsn, autocommit=True)
    owners = (f'SELECT r.id, r.attempts, i.pid FROM "{schema}".runs AS r JOIN "{schema}".incarnations AS i '
              "ON i.id = r.owner WHERE r.status = 'running' ORDER BY r.id")
    victim = start("actors", dsn, schema, 0.02)
    survivor = None
    try:
        handles = client.submit_many("hold", [{"log": log, "seconds": 3.0}] * SUPERVISOR_WORKERS)
        wait_for(lambda: len(conn.execute(owners).fetchall()) == SUPERVISOR_WORKERS, 60, "the runs to start")
        survivor = start("actors", dsn, schema, 0.02)
        live = f'SELECT count(*) FROM "{schema}".incarnations WHERE stopped_at IS NULL AND pid = {survivor.pid}'
        wait_for(lambda: count(conn, live) == 1, 60, "the second supervisor to serve")
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)
        wait_for(lambda: [(a, pid) for _, a, pid in conn.execute(owners).fetchall()]
                 == [(2, survivor.pid)] * SUPERVISOR_WORKERS, 60, "the runs to run under the survivor")
        took = time.monotonic() - killed
        for h in handles:
            h.result(timeout=60)
        ends = [line.split()[1] for line in lines(log) if line.startswith("end")]
        return {"rescue_s": took - LEASE, "duplicates": sum(ends.count(r) - 1 for r in set(ends)),
                "runs": len(handles)}
    finally:
        stop([p for p in (victim, survivor) if p is not None])
        client.close()
        conn.close()


# -- the benchmark -----------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("ACTORS_TEST_POSTGRES"),
                        help="the server (default $ACTORS_TEST_POSTGRES)")
    parser.add_argument("--n", type=int, default=None, help="runs per timed batch (default 2000, 300 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated substrings of the systems to run")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("no server: give --dsn or set ACTORS_TEST_POSTGRES")
    args.n = args.n or (300 if args.quick else 2000)
    args.only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    info = P.header("postgres: actors beside Procrastinate and PgQueuer on one server", args, warm=WARM,
                    supervisor_workers=SUPERVISOR_WORKERS, lease_s=LEASE)
    server = Server(args.dsn)
    global LOGS
    tmp = LOGS = tempfile.mkdtemp(prefix="bench-pg-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the databases are dropped
    results, errors = {}, {}
    try:
        dbs = {}

        def db(name):
            if name not in dbs:
                dbs[name] = server.database(name)
            return dbs[name]

        systems = [(f"actors, {k} supervisor{'s' if k > 1 else ''}",
                    lambda k=k: Actors(db("actors"), f"tp{k}", k)) for k in (1, 2, 3)]
        systems += [(f"Procrastinate, {k} process{'es' if k > 1 else ''}",
                     lambda k=k: Procrastinate(db(f"procrastinate{k}"), k)) for k in (1, 3)]
        systems += [(f"PgQueuer, {k} process{'es' if k > 1 else ''}",
                     lambda k=k: PgQueuer(db(f"pgqueuer{k}"), k, os.path.join(tmp, f"pgq{k}.log"))) for k in (1, 3)]
        for name, make in P.selected(systems, args.only, keep=REF):
            res = P.run_system(name, _closing(make), lambda s: throughput(s, args.n), errors, 100)
            if res is not None:
                results[name] = res
        probes = [("actors, poll 50 ms", lambda log: Actors(db("actors"), "lat50", 1, 0.05)),
                  ("actors, poll 5 ms", lambda log: Actors(db("actors"), "lat5", 1, 0.005)),
                  ("Procrastinate", lambda log: Procrastinate(db("procrastinate_lat"), 1)),
                  ("PgQueuer", lambda log: PgQueuer(db("pgqueuer_lat"), 1, log))]  # its job writes where it was told
        latencies = {}
        for name, make in P.selected(probes, args.only):
            log = os.path.join(tmp, f"lat-{len(latencies)}.log")
            res = P.run_system(f"latency {name}", _closing(lambda make=make, log=log: make(log)),
                               lambda s, log=log: latency(s, log), errors, 60)
            if res is not None:
                latencies[name] = res
        if not args.only or any("actors" in o for o in args.only):
            res = P.run_system("rescue actors", _closing(lambda: None),
                               lambda _: rescue(db("actors"), "rescue", os.path.join(tmp, "rescue.log")), errors, 90)
            if res is not None:
                results["rescue"] = res
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, info, results, latencies, errors)


class _closing:
    """A runner factory for `P.run_system`: the object made, closed after (None: nothing)."""

    def __init__(self, make):
        self.make = make

    def __call__(self):
        return self

    def __enter__(self):
        self.made = self.make()
        return self.made

    def __exit__(self, *exc):
        if self.made is not None:
            self.made.close()


def report(args, info, results, latencies, errors):
    ref = results.get(REF, {}).get("tasks_per_s")
    headers = ["system", "tasks/s", f"vs {REF}", "claim p50 ms", "claim p99 ms", "note"]
    rows = []
    for name, r in results.items():
        if name == "rescue":
            continue
        r["ratio_vs_ref"] = r["tasks_per_s"] / ref if ref else None
        rows.append([name, f"{r['tasks_per_s']:,.0f}", f"{r['ratio_vs_ref']:.2f}x" if ref else "-", "", "", ""])
    for name, r in latencies.items():
        rows.append([f"latency: {name}", "", "", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", "1 process"])
    rescue_row = results.get("rescue")
    if rescue_row:
        rows.append(["rescue: actors, kill -9", "", "", "", "",
                     f"{rescue_row['rescue_s']:+.2f} s after the {LEASE:g} s lease, "
                     f"{rescue_row['duplicates']} duplicate(s) of {rescue_row['runs']} runs"])
    rows.append(["rescue: Procrastinate, PgQueuer", "", "", "", "", "not measured"])
    for name in errors:
        rows.append(P.failed_row(name, len(headers)))
    P.report(headers, rows, errors, {"benchmark": "postgres", **info, "reference": REF, "results": results,
                                     "latency": latencies})
    P.chart("postgres", f"PostgreSQL: {args.n:,} no-op runs, first submit to last recorded done",
            {name: r["tasks_per_s"] for name, r in results.items() if name != "rescue"}, "tasks/s", REF)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        ROLES[sys.argv[2]](*sys.argv[3:])
    else:
        main()
