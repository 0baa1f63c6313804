#!/usr/bin/env python3
"""Publish a message to a roomcast channel from Python (pip install redis).

    python3 examples/publish.py chat:lobby '{"text": "hi"}'

REDIS_URL (default redis://127.0.0.1:6379) and ROOMCAST_REDIS__PREFIX (default roomcast,
the node setting redis.prefix) apply.
"""

import json
import os
import sys
import uuid

import redis


def publish(r: redis.Redis, channel: str, data, prefix: str = "roomcast") -> int:
    """Returns how many nodes host the channel (0: no subscriber anywhere right now)."""
    envelope = {"data": data, "id": str(uuid.uuid4())}  # the id makes a retry harmless
    return r.publish(f"{prefix}:{channel}", json.dumps(envelope))


if __name__ == "__main__":
    channel, data = sys.argv[1], json.loads(sys.argv[2])
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    nodes = publish(r, channel, data, os.environ.get("ROOMCAST_REDIS__PREFIX", "roomcast"))
    print(f"delivered to {nodes} node(s)")
