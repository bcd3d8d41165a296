"""One serve session: the uvloop event loop, its timers, the cross-thread inbox, the store poll,
and the stop states. It wires the tracker (run state) to the pool (processes); both report to
it, and only this loop's thread touches run state while serving.

    submit() (any thread) ──► store.insert ──► tickets ──► inbox ──┐
    Client (other process) ──► store ──► poll (data_version) ──────┴─► Tracker: ready queue
    turn: Tracker.dispatch (claims) ──► store.commit (one transaction) ──► Tracker.act:
          Assign ──► Pool ──► worker pipe; waiters woken; retries and requeues armed
    worker pipe ──► Pool reader ──► Tracker.report ──► Changes (next turn's commit)
    worker exit (pidfd) ──► Pool ──► Tracker.worker_exited ──► Changes; Pool restarts the slot

Group commit: callbacks only record changes; `_turn`, scheduled once per loop turn, commits
everything of that turn in one transaction and only then acts on it, so every state change is
durable before anything depends on it. An exception that escapes any callback stops serving
(`SupervisorCrashed`) instead of leaving a turn's changes lost.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, SupervisorCrashed
from ..events import EVENT_DAYS
from ..run import JobInfo
from ..stores import Changes
from .outcomes import signal_name
from .shutdown import SignalGuard
from .status import INTERVAL as STATUS_INTERVAL
from .status import StatusBoard
from .tracker import Tracker, Window

if TYPE_CHECKING:  # the pool, processes and asyncio are imported when serving starts
    import asyncio

    from ..protocol import Spawn
    from .dispatch import Ticket
    from .pool import Pool, WorkerSlot
    from .processes import ForkServers
    from .supervisor import Supervisor

log = logging.getLogger("actors")
MEMORY_SAMPLE = 0.25  # seconds between samples of the workers' memory, with max_memory
# A long stored queue is read a page at a time, oldest first: the next page when fewer than
# half a page are ready, unless HELD live runs are known already (delayed, retrying, parked by
# a limit): a backlog of a million runs costs a page of memory, not a million tickets.
PAGE = 10_000
HELD = 100_000


class Stage(enum.Enum):
    """idle -> starting -> serving -> draining (graceful) | forcing -> stopped -> idle."""

    IDLE = "idle"
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    FORCING = "forcing"
    STOPPED = "stopped"


class ServeLoop:
    """The serving side of one supervisor; the tracker's `Effects`. Lives as long as it does."""

    def __init__(self, sup: Supervisor) -> None:
        # The pool's modules (asyncio, psutil) load with a Supervisor, so that serve() starts in
        # milliseconds, but not with `import actors`: a process that submits through a Client
        # never pays for them. uvloop waits for serve() (5 ms), multiprocess and dill for a fork
        # server that must be a fresh interpreter.
        from . import pool  # noqa: F401

        self.sup = sup
        self.tracker = Tracker(sup.policies, self, sup.workers, kill_grace=sup.kill_grace,
                               max_runs_per_worker=sup.max_runs_per_worker)
        self.stage = Stage.IDLE
        # Guards what threads other than the loop's touch: the start of serve() (so a shutdown()
        # from another thread at that moment is not lost) and submits while no loop runs.
        self.lock = threading.RLock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watched: tuple[int, int] | None = None  # (generation, socket) of the store's the loop watches
        self.thread: int | None = None
        self.pool: Pool | None = None
        self.servers: ForkServers | None = None  # from the first serve() to close()
        self.fatal: BaseException | None = None
        self.finished = threading.Event()
        self.turns = 0  # loop turns that ran (a loop that spins shows here)
        self._until: str | None = None
        self._drained = False  # the session ended because the queue was empty (until="drained")
        self._stop_request: bool | None = None  # a shutdown(graceful) asked for while starting
        self._stopped: asyncio.Future[None] | None = None
        self._exit_code = 0
        self._signals = SignalGuard()
        self._signal_count = 0
        self._timers: list[tuple[float, Any]] = []  # (due on the loop's clock, handle)
        self._turn_pending = False
        self._inbox: deque[list[Ticket]] = deque()  # tickets submitted from other threads
        self._handed: set[int] = set()  # their run ids, until the loop has queued them
        self._inbox_armed = False
        self._events_after = 0  # the highest event id read
        self.board = StatusBoard(sup.workers)  # what `store.workers()` and `supervisor_info()` read
        self.metrics: Any = None  # an `actors.metrics.Metrics` when metrics are served

    # -- Effects, for the tracker --------------------------------------------------------------

    def later(self, delay: float, fn: Any, *args: Any) -> Any | None:
        """A timer that the session cancels when it ends (the list forgets timers that fired);
        None while no loop serves. The due time is kept beside the handle: uvloop returns a plain
        `Handle`, without `when()`, for a delay <= 0."""
        loop = self.loop
        if loop is None:
            return None
        now = loop.time()
        handle = loop.call_later(delay, fn, *args)
        timers = self._timers
        if len(timers) > 64:
            timers[:] = [(due, t) for due, t in timers if due > now and not t.cancelled()]
        timers.append((now + delay, handle))
        return handle

    def send(self, window: Window, message: Any) -> None:
        if self.pool is not None:
            self.pool.send(self.pool.slots[window.index], message)

    def terminate(self, window: Window, note: str | None = None) -> bool:
        pool = self.pool
        if pool is None:
            return False
        slot = pool.slots[window.index]
        if slot.exited or slot.terminating:
            return False
        if note is not None:
            slot.note = note
        pool.terminate(slot)
        return True

    @property
    def listening(self) -> bool:
        return bool(self.sup._listeners)

    def emit(self, event: str, ticket: Ticket) -> None:
        self.sup._emit(event, ticket.id)

    def notify(self, run_id: int) -> None:
        self.sup._waiters.notify(run_id)

    def wake(self) -> None:
        if not self._turn_pending and self.loop is not None:
            self._turn_pending = True
            self.loop.call_soon(self._turn)

    def spawn(self, window: Window, parent: Ticket, message: Spawn) -> None:
        """A run starts a child (`ctx.invoke`, `ctx.dispatch`): store it now (its own commit:
        the worker waits for the id), and reply."""
        from ..protocol import Spawned

        try:
            child_id = self.sup._spawn(parent.id, parent.tenant, message)
            reply = Spawned(parent.id, child_id)
        except Exception as exc:  # an unknown job, a full store: the parent's error, not ours
            reply = Spawned(parent.id, None, f"{type(exc).__name__}: {exc}")
        self.send(window, reply)

    def cancel_run(self, run_id: int) -> None:
        try:
            self.sup.cancel(run_id)
        except Exception:
            log.exception("ctx.cancel(%d) failed", run_id)

    # -- other threads ---------------------------------------------------------------------------

    def foreign_loop(self) -> asyncio.AbstractEventLoop | None:
        """The serving loop if it belongs to another thread (running or about to run), else None."""
        loop = self.loop
        if loop is None or self.thread == threading.get_ident() or loop.is_closed():
            return None
        return loop

    def call(self, fn: Any, *args: Any) -> None:
        """Run fn on the loop's thread: now if we are on it or none serves, else soon."""
        loop = self.foreign_loop()
        if loop is None:
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile: nobody else touches the state now
            fn(*args)

    def started(self) -> bool:
        """Whether a session has read the queue (its loop exists), for a run just stored: if not,
        the next session reads it from the store. Checked under the lock that session start
        holds while it reads the store and sets the loop, so no run falls between the two."""
        if self.loop is not None:
            return True
        with self.lock:
            return self.loop is not None

    def hand_over(self, tickets: list[Ticket]) -> None:
        """Queue new tickets from any thread. Other threads drop them in an inbox and wake the
        loop once for however many arrive before it looks (fewer wake-ups, bigger batches)."""
        loop = self.foreign_loop()
        if loop is None:
            with self.lock:  # serve() reads the queue from the store under this lock: no run is missed
                loop = self.foreign_loop()
                if loop is None:
                    if self.loop is not None:  # submitted from a callback on the loop's own thread
                        self.tracker.enqueue(tickets)
                    return  # not serving: the next serve() reads them from the store
        self._handed.update(t.id for t in tickets)
        self._inbox.append(tickets)
        if not self._inbox_armed:
            self._inbox_armed = True
            try:
                loop.call_soon_threadsafe(self._take_inbox)
            except RuntimeError:
                self._take_inbox()

    def _take_inbox(self) -> None:
        """Queue what other threads submitted. A poll of the store may have brought a run in
        first (it reads every committed row): a run known here, or one the poll already scanned
        past (so it was loaded, and maybe has ended, or was no longer queued), is not queued again."""
        self._inbox_armed = False  # first disarm, then drain: a later append re-arms
        inbox = self._inbox
        while inbox:
            tickets = inbox.popleft()
            if not self.tracker.backlog:  # else stored, past the backlog: the pager reads them in their turn
                scanned = self.tracker.scanned
                self.tracker.enqueue([t for t in tickets if t.id > scanned])
            self._handed.difference_update(t.id for t in tickets)  # after: held all along, or not at all

    def holds(self, run_id: int) -> bool:
        """Whether the run is live here (queued, running, or handed over from another thread and
        not taken yet): the loop notifies its waiters when it ends. False is always safe (the
        caller reads the store); any thread may ask."""
        return run_id in self.tracker.tickets or run_id in self._handed

    # -- the turn --------------------------------------------------------------------------------

    def _turn(self) -> None:
        """Once per loop turn: dispatch, commit the turn's changes in one transaction, act."""
        self._turn_pending = False
        self.turns += 1
        tracker = self.tracker
        if tracker.backlog and self.stage is Stage.SERVING:
            try:
                self._page_in()
            except StoreError as exc:
                self._die(exc)
                return
        sends = tracker.dispatch(self._open_windows()) if self.stage is Stage.SERVING else []
        changes = tracker.take_changes()
        lost: set[int] = set()
        if changes:
            began = time.perf_counter()
            try:
                lost = self.sup.store.commit(changes, time.time())
            except StoreError as exc:
                self._die(exc)
                return
            if self.metrics is not None:
                self.metrics.committed(changes, tracker.tickets, time.perf_counter() - began, time.time())
        tracker.act(sends, lost, changes.deferred)
        self._check_progress()

    def _open_windows(self) -> list[Window]:
        pool = self.pool
        if pool is None:
            return []
        windows = self.tracker.windows
        return [windows[slot.index] for slot in pool.slots if not slot.exited and not slot.terminating]

    # -- the pool's reports ----------------------------------------------------------------------

    def _on_message(self, slot: WorkerSlot, message: Any) -> None:
        self.tracker.report(self.tracker.windows[slot.index], message)

    def _on_spawn(self, slot: WorkerSlot) -> None:
        window = self.tracker.windows[slot.index]
        window.attach(slot.pid)
        window.runs_done = slot.runs_before
        self.board.spawned(slot.index)
        self.wake()

    def _write_status(self) -> None:
        """About once a second: the supervisor's heartbeat and its workers go with the next
        turn's commit (a turn is woken for it when nothing else happens)."""
        try:
            self.tracker.changes.status = self.board.sample(self.pool, self.tracker, self.metrics)
        except Exception:  # a status line is never worth a crash
            log.exception("could not sample the workers' state")
        self.wake()
        self.later(STATUS_INTERVAL, self._write_status)

    def _on_ready(self, slot: WorkerSlot) -> None:
        self.tracker.worker_ready(self.tracker.windows[slot.index])

    def _on_orphaned(self, slot: WorkerSlot) -> None:
        self.tracker.retire(self.tracker.windows[slot.index])

    def _on_exit(self, slot: WorkerSlot, exitcode: int | None) -> None:
        """A worker process is gone: the tracker settles its runs, the pool refills its place."""
        expected = self.tracker.worker_exited(self.tracker.windows[slot.index], exitcode,
                                              forcing=self.stage is Stage.FORCING, setup_error=slot.setup_error,
                                              note=slot.note)
        if self.stage is Stage.SERVING and self.pool is not None:
            delay = self.pool.schedule_restart(slot, crashed=not expected)
            if delay:
                log.warning("worker slot %d restarts in %.1f s after %d quick deaths", slot.index, delay, slot.failures)

    def _sample_memory(self) -> None:
        """Kill a worker whose tree holds more than max_memory; remember peaks for the attempt log."""
        from .processes import tree_memory

        limit, pool = self.sup.max_memory, self.pool
        assert limit is not None and pool is not None
        for slot in pool.slots:
            window = self.tracker.windows[slot.index]
            if not slot.exited and not slot.terminating and window.inflight:
                self.tracker.memory_sampled(window, tree_memory(slot.pid), limit)
        self.later(MEMORY_SAMPLE, self._sample_memory)

    def _load_page(self, after: int) -> None:
        """Read the next page of stored queued runs (ids above `after`)."""
        store, tracker = self.sup.store, self.tracker
        rows = store.load_ready(after, limit=PAGE)
        tracker.load(rows, self.sup.jobs, store.steps, store.positions)
        tracker.backlog = len(rows) == PAGE

    def _page_in(self) -> None:
        tracker = self.tracker
        if tracker.backlog and len(tracker.ready) < PAGE // 2 and len(tracker.tickets) < HELD:
            self._load_page(tracker.scanned)

    def _poll_store(self) -> None:
        """Pick up runs that other processes (Clients) stored (the pager reads them in turn while
        a backlog is being read)."""
        if self._look():
            self._watch_store()
            self.later(self.sup.poll_interval, self._poll_store)

    def _look(self) -> bool:
        """One look at the store for what others committed; False when the store failed."""
        store = self.sup.store
        try:
            if store.changed():
                if not self.tracker.backlog:
                    self._load_page(self.tracker.scanned)
                self.read_events()
            self.tracker.waits.recheck()
        except StoreError as exc:
            self._die(exc)
            return False
        return True

    def _watch_store(self, stop: bool = False) -> None:
        """A store that can say when others commit (PostgreSQL's LISTENing socket,
        `wake_socket`): the loop looks at once when it is readable, not at the next poll (which
        stays the truth). Follows the store's connection as it changes; `stop` lets it go."""
        socket_of = getattr(self.sup.store, "wake_socket", None)
        if not callable(socket_of) or self.loop is None:
            return
        watched = self._watched
        found = None if stop else socket_of(watched[0] if watched is not None else 0)
        if found is not None and watched is not None and found[0] == watched[0]:
            return  # the same connection: keep watching it
        if watched is not None:
            self.loop.remove_reader(watched[1])
            os.close(watched[1])
            self._watched = None
        if found is not None:
            self._watched = found
            self.loop.add_reader(found[1], self._on_store_readable)

    def _on_store_readable(self) -> None:
        if self.stage is not Stage.SERVING:
            self._watch_store(stop=True)  # stopping: the poll no longer looks either
        elif self._look():  # drains the notifications: readable no more
            self._watch_store()

    def read_events(self) -> None:
        """Events stored since the last look: wake the runs waiting for them, start the runs
        they trigger (idempotent: the key names the event), then mark them handled."""
        store, tracker = self.sup.store, self.tracker
        while True:
            events = store.new_events(self._events_after)
            for found in events:
                tracker.waits.on_event(found)
                self.sup._trigger(found)
                tracker.changes.handled_events.append(found.id)
                self._events_after = found.id
            if events:
                self.wake()
            if len(events) < 1000:
                return

    # -- a session -------------------------------------------------------------------------------

    def run(self, until: str | None) -> str:
        """Serve until a stop (see `Supervisor.serve`): "drained" or "stopped"; raises what
        stopped it, if anything did."""
        with self.lock:
            if self.stage is not Stage.IDLE:
                raise RuntimeError("this supervisor is already serving or was stopped")
            self._open_session()
            self.stage = Stage.STARTING
            self._stop_request = None
            self._until = until
            self._drained = False
            import uvloop

            loop = uvloop.new_event_loop()
            self.loop, self.thread = loop, threading.get_ident()
            self.finished.clear()
        self._signals.save()
        try:
            loop.run_until_complete(self._serve())
        finally:
            self.sup.store.release()
            self._signals.restore()
            for _, timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self.tracker.disarm()
            loop.close()
            self.loop = self.thread = None
            self._take_inbox()  # submitted from another thread as serving ended: keep them queued
            with self.lock:
                self.stage = Stage.IDLE if self.fatal is None else Stage.STOPPED
            self._signal_count = 0
            self.finished.set()
        if self.fatal is not None:
            raise self.fatal
        if self._exit_code:
            code, self._exit_code = self._exit_code, 0
            raise SystemExit(code)
        return "drained" if self._drained else "stopped"

    def _open_session(self) -> None:
        """Take the store's serving lock, queue again what a dead supervisor left running, and
        read the queue from the store (with `self.lock` held: submitting threads wait)."""
        store, tracker = self.sup.store, self.tracker
        store.acquire()
        try:
            recovered = store.recover(time.time())
            if recovered:
                log.warning("recovered %d run(s) left running by a supervisor that died; they are queued again",
                            recovered)
            record = getattr(store, "record_jobs", None)  # for readers without the code (the dashboard)
            if callable(record):
                now = time.time()
                record([JobInfo(j.name, j.version, j.min_version, j.cron, j.options(), now)
                        for j in self.sup.jobs.values()])
            store.changed()  # the poll looks for what others store from now on
            tracker.clear()
            tracker.limit_keys_counted = bool(getattr(store, "counts_limit_keys", False))
            self._load_page(0)
            tracker.waits.store = store
            tracker.load_waiting(store.load_waiting(), self.sup.jobs, store.steps, store.positions)
            store.purge_events(time.time() - EVENT_DAYS * 86400)
            self._events_after = 0
        except BaseException:
            store.release()  # a refused session keeps no lock
            raise
        self.prefork()  # now, before the event loop exists, so that it may be a fork
        if self.sup.metrics_port is not None and self.metrics is None:  # after the fork: it is a thread
            from ..metrics import serve_metrics

            try:
                serve_metrics(self.sup, self.sup.metrics_port, self.sup.metrics_host)
            except BaseException:
                self.sup.store.release()
                raise

    def prefork(self, workers: bool = False) -> None:
        """Start the fork server if none runs, and with `workers` the workers too (see
        `Supervisor.prefork`)."""
        if self.servers is None:
            from .pool import HEALTHY_AFTER, RESTART_BACKOFF
            from .processes import ForkServers, Setup

            self.servers = ForkServers(HEALTHY_AFTER, RESTART_BACKOFF)
            self.servers.setup = Setup(self.sup.jobs, self.sup.default_retry, self.sup.max_result_size,
                                       fork=self.sup.max_memory is None)
        try:
            self.servers.server()
            if workers:
                with self.lock:
                    if self.stage is Stage.IDLE:
                        self.servers.spawn_ahead(self.sup.workers)
        except Exception:
            pass  # the pool's first spawn tries again, and reports what fails

    def close_servers(self) -> None:
        """The supervisor is closed: its fork server and liveness pipe go."""
        if self.servers is not None:
            self.servers.close()

    async def _serve(self) -> None:
        import asyncio

        from .pool import Pool

        sup, loop = self.sup, asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self.stage = Stage.SERVING
        assert self.servers is not None
        self.pool = Pool(loop, sup.workers, self.servers, self._on_message, self._on_exit, self._on_spawn,
                         sup.kill_grace, sup.max_result_size, on_ready=self._on_ready, on_orphaned=self._on_orphaned)
        loop.set_exception_handler(self._on_loop_error)
        try:
            self._signals.install(loop, self._on_signal, self._log_status)
            self.tracker.arm()  # delayed or retrying while not serving
            self.board.begin()
            self.pool.start()
            self._write_status()
            sup._cron.start()
            self.later(sup.poll_interval, self._poll_store)
            self._watch_store()
            self.read_events()  # those stored while nobody served
            if sup.max_memory is not None:
                self.later(MEMORY_SAMPLE, self._sample_memory)
            self.wake()
            if self._stop_request is not None:  # shutdown() came while serve() was starting
                self.begin_stop(self._stop_request)
            await self._stopped
        finally:
            self._watch_store(stop=True)
            self.pool.close()
            changes = self.tracker.take_changes()
            if self.fatal is None:
                changes.status = self.board.sample(self.pool, self.tracker, self.metrics, stopped=True)
            if changes and self.fatal is None:
                try:
                    sup.store.commit(changes, time.time())
                except StoreError as exc:
                    self.fatal = exc

    def _check_progress(self) -> None:
        """Drain mode ends when nothing is left; a stop ends when every worker is gone."""
        tracker, pool = self.tracker, self.pool
        if self.stage is Stage.SERVING:
            if self._until == "drained" and not tracker.tickets and not tracker.changes:
                self._load_page(tracker.scanned)
                if not tracker.tickets and not tracker.changes:
                    self._drained = True
                    self.begin_stop(graceful=True)
            return
        if self.stage in (Stage.DRAINING, Stage.FORCING) and pool is not None:
            if self.stage is Stage.DRAINING and not tracker.running():
                for slot in pool.slots:  # idle workers are kept for the next serve(), others stopped
                    window = tracker.windows[slot.index]
                    if not slot.exited and (window.retiring or window.inflight or not pool.keep(slot, window.runs_done)):
                        tracker.retire(window)
            if all(slot.exited for slot in pool.slots) and not tracker.changes and not tracker.after:
                self.stage = Stage.STOPPED
                if self._stopped is not None and not self._stopped.done():
                    self._stopped.set_result(None)

    def begin_stop(self, graceful: bool, reason: str | None = None) -> None:
        if self.stage in (Stage.IDLE, Stage.STOPPED) or self.loop is None:
            return
        if graceful and self.stage is Stage.SERVING:
            self.stage = Stage.DRAINING
            if reason:
                log.warning("%s: finishing %d running run(s) within %.0f s, queued runs stay queued; "
                            "send it again to stop now", reason, self.tracker.running(), self.sup.grace)
            self.later(self.sup.grace, self._grace_over)
        elif not graceful and self.stage in (Stage.SERVING, Stage.DRAINING):
            self.stage = Stage.FORCING
            if reason:
                log.warning("%s: stopping now; running runs are interrupted and queued again", reason)
            assert self.pool is not None
            for slot in self.pool.slots:
                if slot.restart_handle is not None:
                    slot.restart_handle.cancel()
                    slot.restart_handle = None
                self.pool.terminate(slot)
        self.wake()

    def serving(self) -> bool:
        """Whether a session runs or is starting or stopping (from any thread)."""
        return self.stage is not Stage.IDLE and self.stage is not Stage.STOPPED

    def request_stop(self, graceful: bool, timeout: float | None) -> None:
        """shutdown() from any thread: honoured whenever it comes while a session runs or starts."""
        with self.lock:
            loop = self.loop
            if loop is None or self.stage in (Stage.IDLE, Stage.STOPPED):
                return
            if self.thread == threading.get_ident():
                self.begin_stop(graceful)
                return
            # the session reads this once serving, in case the call below runs before it is
            self._stop_request = graceful and self._stop_request is not False
            try:
                loop.call_soon_threadsafe(self.begin_stop, graceful)
            except RuntimeError:  # the loop closed meanwhile: serve() is returning
                pass
        self.finished.wait(timeout)

    def _grace_over(self) -> None:
        if self.stage is Stage.DRAINING:
            self._exit_code = self._exit_code or 128 + 15
            self.begin_stop(graceful=False, reason=f"grace period of {self.sup.grace:.0f} s is over")

    def _on_signal(self, signum: int) -> None:
        self._signal_count += 1
        name = signal_name(signum)
        if self._signal_count == 1:
            self.begin_stop(graceful=True, reason=f"received {name}")
        elif self.stage is not Stage.FORCING:
            self._exit_code = 128 + signum
            self.begin_stop(graceful=False, reason=f"received {name} again")

    def _log_status(self) -> None:
        now = time.time()
        running = [f"run {w.inflight[0].id} ({w.inflight[0].job.name}, {now - w.inflight[0].claimed_at:.1f} s)"
                   for w in self.tracker.windows if w.inflight]
        pids = [s.pid for s in self.pool.slots if s.alive] if self.pool else []
        log.warning("status: %s; %d queued; running: %s; worker pids: %s", self.stage.value, len(self.tracker.ready),
                    ", ".join(running) or "none", pids)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception escaped a callback of the loop (a turn, a timer, a pipe reader): the
        turn it broke may have lost changes, so serving on would break promises silently. Stop,
        and let `serve()` raise; the next start requeues what was running."""
        exc = context.get("exception")
        where = context.get("message") or "a loop callback"
        error = SupervisorCrashed(f"the supervisor stopped on an unexpected error in {where}: "
                                  f"{type(exc).__name__ if exc else 'error'}: {exc}")
        error.__cause__ = exc
        log.error("%s", error, exc_info=exc, extra={"actors_loop_error": True})
        if self.fatal is None:
            self._die(error, logged=True)

    def _die(self, exc: BaseException, logged: bool = False) -> None:
        """The store failed, or the loop broke: stop everything rather than carry on without
        durability."""
        if not logged:
            log.error("stopping: %s", exc)
        self.fatal = exc
        self.tracker.changes = Changes()
        self.tracker.after = []
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

