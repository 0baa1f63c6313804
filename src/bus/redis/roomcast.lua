#!lua name=roomcast
-- roomcast's Redis Functions. Every node loads this library at start and after every
-- reconnect (FUNCTION LOAD REPLACE), so a Redis restarted without persistence gets it back.
-- Documented for backends in proto/PROTOCOL.md ("Publishing with history").
--
-- A channel is addressed by its pub/sub name as KEYS[1] (e.g. roomcast:chat:lobby). Its
-- keys carry that name as their hash tag, so on Redis Cluster they live in the slot of
-- the pub/sub channel, and FCALL is routed there by KEYS[1]:
--   {roomcast:chat:lobby}:s  a stream: one entry per message, id "<offset>-0", field e = envelope
--   {roomcast:chat:lobby}:m  a hash: epoch, top (last offset), size, ttl
--
-- Every message on a channel with history gets a strictly increasing offset. The epoch
-- names one unbroken history: when the metadata is gone (expired, evicted, or Redis
-- restarted without persistence), a new epoch starts and old offsets mean nothing.

local LIBRARY_VERSION = 1
local DEFAULT_SIZE = 100
local DEFAULT_TTL = 300

local function keys_of(channel)
  return '{' .. channel .. '}:s', '{' .. channel .. '}:m'
end

-- The channel's epoch; a new one, with an empty stream, when its metadata is gone.
local function ensure_epoch(stream, meta)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch
  end
  local now = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(now[1]), tonumber(now[2]))
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
  return epoch
end

-- History size and TTL: given by the caller (and then remembered for callers that give
-- none, such as backends), else remembered, else the defaults.
local function policy(meta, size, ttl)
  size, ttl = tonumber(size), tonumber(ttl)
  if size and ttl and size > 0 and ttl > 0 then
    redis.call('HSET', meta, 'size', size, 'ttl', ttl)
    return size, ttl
  end
  local stored = redis.call('HMGET', meta, 'size', 'ttl')
  return tonumber(stored[1]) or DEFAULT_SIZE, tonumber(stored[2]) or DEFAULT_TTL
end

-- FCALL roomcast_publish 1 <channel> <envelope> [size ttl]
-- Appends the envelope to the channel's history and publishes it to the channel, with its
-- position, in one step. Returns {offset, epoch}.
local function publish(keys, args)
  local channel = keys[1]
  local envelope = args[1]
  if type(envelope) ~= 'string' or #envelope == 0 then
    return redis.error_reply('ERR roomcast_publish needs an envelope')
  end
  local stream, meta = keys_of(channel)
  local epoch = ensure_epoch(stream, meta)
  local size, ttl = policy(meta, args[2], args[3])
  local offset = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'e', envelope)
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', meta, ttl)
  local positioned = cmsgpack.pack({ v = LIBRARY_VERSION, o = offset, ep = epoch, e = envelope })
  redis.call('PUBLISH', channel, positioned)
  return { offset, epoch }
end

-- FCALL roomcast_history 1 <channel> <mode> <offset> <limit> [size ttl]
-- mode: "since" (entries after offset, oldest first), "before" (entries before offset,
-- newest first), "last" (the newest, newest first), "none" (position only).
-- Returns {top, epoch, offset1, envelope1, offset2, envelope2, ...}. Makes the channel's
-- epoch if it has none, so that a subscriber always learns one.
local function history(keys, args)
  local stream, meta = keys_of(keys[1])
  local epoch = ensure_epoch(stream, meta)
  local _, ttl = policy(meta, args[4], args[5])
  if redis.call('TTL', meta) < 0 then
    redis.call('EXPIRE', meta, ttl)
  end
  local mode, offset, limit = args[1], tonumber(args[2]) or 0, tonumber(args[3]) or 0
  local entries = {}
  if limit > 0 and mode == 'since' then
    entries = redis.call('XRANGE', stream, '(' .. offset .. '-0', '+', 'COUNT', limit)
  elseif limit > 0 and mode == 'before' then
    entries = redis.call('XREVRANGE', stream, '(' .. offset .. '-0', '-', 'COUNT', limit)
  elseif limit > 0 and mode == 'last' then
    entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', limit)
  end
  local out = { tonumber(redis.call('HGET', meta, 'top')) or 0, epoch }
  for _, entry in ipairs(entries) do
    out[#out + 1] = tonumber((string.gsub(entry[1], '-0$', '')))
    out[#out + 1] = entry[2][2]
  end
  return out
end

redis.register_function('roomcast_publish', publish)
redis.register_function('roomcast_history', history)
