"""The worker process: executes runs sent by its supervisor. Never touches the store."""
