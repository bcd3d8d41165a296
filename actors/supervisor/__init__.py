"""The supervisor process: queue, run store, worker pool, timers and signals, on one event loop."""
