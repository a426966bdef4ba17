"""Ray Serve's request router for the replicas: the requests of one session go to one replica.

A replica's slots keep the KV cache of the requests they served, and a chat resends its whole
transcript every turn; on the replica that served the last turn, only the new turn is evaluated
(``timings.cached_n``). On another replica the whole transcript is evaluated again.

The session is the ``X-Session-Id`` header (Ray Serve's own: its HTTP proxy reads it into
``RequestMetadata.session_id``; ``RAY_SERVE_SESSION_ID_HEADER_KEY`` names another header).
The router cannot look at the body (the prompt, the messages, OpenAI's ``user`` field): the proxy
chooses a replica before it has read the body, which it then streams to the replica it chose.

A session's replicas are ranked by rendezvous hashing (each replica scores ``hash(session,
replica)``; the highest score first). The ranking is a function of the session and the set of
replicas alone, so every proxy of a multi-machine cluster -- each has its own router -- sends a
session to the same replica, and a replica that goes or comes moves only the sessions it loses or
wins. A request goes to the first replica in the ranking that has room for it
(``max_ongoing_requests``); a request without a session to the less busy of two replicas picked
at random (the "power of two choices" of Ray's default router).
"""

from __future__ import annotations

import hashlib
import random

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

#: The router's import path, as ``RequestRouterConfig`` takes it (Ray imports it in each proxy).
SESSION_ROUTER_CLASS = f"{__name__}:SessionAffinityRouter"


class SessionAffinityRouter(RequestRouter):
    """Ranks the replicas by rendezvous hash of the request's session (see the module's docstring)."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if pending_request is None or not candidate_replicas:
            return [candidate_replicas]
        # When every replica offered is full, Ray's retry loop waits (with backoff) before it asks
        # again, instead of spinning.
        pending_request.routing_context.should_backoff = True
        session = pending_request.metadata.session_id
        if not session:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        # One replica per rank: the next replica is tried only when the one before it is full.
        return [[replica] for replica in ranked_for_session(session, candidate_replicas)]


def ranked_for_session(session: str, replicas: list[RunningReplica]) -> list[RunningReplica]:
    """``replicas``, the session's first: by rendezvous score, the highest first."""
    return sorted(replicas, key=lambda replica: _score(session, replica.replica_id.unique_id), reverse=True)


def _score(session: str, replica_id: str) -> int:
    # blake2b, not hash(): the same in every process (each proxy has its own router).
    key = f"{session}\0{replica_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
