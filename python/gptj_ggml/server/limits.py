"""The server's default limits, in a module of their own so that the command line can show them
without importing the web framework."""

#: Requests that may wait for a slot; one more is answered 503.
DEFAULT_MAX_QUEUE = 64
#: The largest request body: a full 2048-token transcript is about 10 KB of JSON.
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: Seconds a client told "queue full" (503) is asked to wait before it tries again.
RETRY_AFTER_SECONDS = 1
