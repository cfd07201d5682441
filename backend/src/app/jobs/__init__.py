"""Multi-process mode: decision cycles as jobs on a PostgreSQL job queue (procrastinate), a scheduler that enqueues
them on the market clock and workers that run them (see `queue`, `scheduler`, `worker`)."""
