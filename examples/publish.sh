#!/usr/bin/env sh
# Publish a message to a roomcast channel from a shell: one Redis command.
#   examples/publish.sh chat:lobby '{"text":"hi"}'
# REDIS_URL (default redis://127.0.0.1:6379) and ROOMCAST_REDIS__PREFIX (default roomcast, the
# node setting redis.prefix) apply.
set -eu
channel="$1"
data="$2"
exec redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" \
  PUBLISH "${ROOMCAST_REDIS__PREFIX:-roomcast}:${channel}" "{\"data\":${data}}"
