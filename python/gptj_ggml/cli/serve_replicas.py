"""``gptj-ggml serve MODEL --replicas N``: the server as N Ray Serve replicas, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def serve_replicas(args: argparse.Namespace, app_options: dict[str, Any], cache: dict[str, Any]) -> int:
    """Start the replicas (:func:`gptj_ggml.server.replicas.run_replicas`) and wait for Ctrl-C."""
    try:
        import ray
        from ray import serve

        from ..server.replicas import APP_NAME, run_replicas
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "ray":
            raise
        print(f"error: --replicas {args.replicas} needs Ray Serve: pip install 'gptj_ggml[ray]'", file=sys.stderr)
        return 1
    # Each replica opens the file; a path that names nothing should fail here, in one line,
    # rather than in every replica's log. (The file is not parsed here: that is the replicas' work.)
    with open(args.model, "rb"):
        pass

    # Ray's own rule: the cluster in $RAY_ADDRESS, else the one last started on this machine
    # (`ray start --head`), else a new local one, which ends with this process.
    ray.init(include_dashboard=False, logging_level=args.log_level.upper())
    try:
        print(f"starting {args.replicas} replicas of {args.model} on Ray Serve ...", file=sys.stderr)
        try:
            run_replicas(
                args.model,
                replicas=args.replicas,
                host=args.host,
                port=args.port,
                repack=args.repack,
                **cache,
                log_level=args.log_level.upper(),
                **app_options,
            )
        except RuntimeError as error:
            # Ray's own words (the replicas' traceback is in its log, above).
            print(f"error: the replicas did not start: {error}", file=sys.stderr)
            return 1
        print(
            f"serving {args.model} on http://{args.host}:{args.port} ({args.replicas} Ray Serve replicas; a "
            f"session's requests, by their X-Session-Id header, go to one replica)",
            file=sys.stderr,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # Ctrl-C is the normal end: the replicas stop (streams in progress are cancelled).
        pass
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()
    return 0
