#!/usr/bin/env sh
# Publish a message to a roomcast channel from a shell: one Redis command. FCALL of
# roomcast_publish keeps it in the channel's history (so reconnecting clients recover it)
# and prints its offset and epoch; on channels without history, PUBLISH does as well.
#   examples/publish.sh chat:lobby '{"text":"hi"}'
# REDIS_URL (default redis://127.0.0.1:6379) and ROOMCAST_REDIS__PREFIX (default roomcast, the
# node setting redis.prefix) apply.
set -eu
channel="$1"
data="$2"
exec redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" \
  FCALL roomcast_publish 1 "${ROOMCAST_REDIS__PREFIX:-roomcast}:${channel}" "{\"data\":${data}}"
