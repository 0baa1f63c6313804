#!/usr/bin/env python3
"""Publish a message to a roomcast channel from Python (pip install redis).

    python3 examples/publish.py chat:lobby '{"text": "hi"}'

One command: FCALL of roomcast_publish keeps the message in the channel's history (so
reconnecting clients recover it) and returns its offset and epoch. REDIS_URL (default
redis://127.0.0.1:6379) and ROOMCAST_REDIS__PREFIX (default roomcast, the node setting
redis.prefix) apply.
"""

import json
import os
import sys
import uuid

import redis


def publish(r: redis.Redis, channel: str, data, prefix: str = "roomcast"):
    """Returns (offset, epoch): where the message stands in the channel's history."""
    envelope = {"data": data, "id": str(uuid.uuid4())}  # the id makes a retry harmless
    offset, epoch = r.fcall("roomcast_publish", 1, f"{prefix}:{channel}", json.dumps(envelope))
    return offset, epoch.decode() if isinstance(epoch, bytes) else epoch


if __name__ == "__main__":
    channel, data = sys.argv[1], json.loads(sys.argv[2])
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    offset, epoch = publish(r, channel, data, os.environ.get("ROOMCAST_REDIS__PREFIX", "roomcast"))
    print(f"published at offset {offset} of epoch {epoch}")
