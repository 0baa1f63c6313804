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
--   {roomcast:chat:lobby}:p  a hash: client id -> its presence info (JSON text)
--   {roomcast:chat:lobby}:z  a sorted set: client id -> when its presence expires (ms)
--
-- Every message on a channel with history gets a strictly increasing offset. The epoch
-- names one unbroken history: when the metadata is gone (expired, evicted, or Redis
-- restarted without persistence), a new epoch starts and old offsets mean nothing.

local LIBRARY_VERSION = 1
local DEFAULT_SIZE = 100
local DEFAULT_TTL = 300

-- Publishes on the channel: SPUBLISH on a Redis Cluster, where nodes subscribe with
-- SSUBSCRIBE on the channel's own shard (its slot is the one of this call's key), and
-- PUBLISH on a single Redis.
-- Whether this server runs in cluster mode: asked once per library load (a server does
-- not change mode without a restart, which reloads the library), not on every publish.
local sharded = nil

local function send(channel, payload)
  if sharded == nil then
    sharded = string.find(redis.call('INFO', 'cluster'), 'cluster_enabled:1', 1, true) ~= nil
  end
  if sharded then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end

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
  send(channel, positioned)
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

-- Presence. Each node refreshes its own clients' entries; an entry not refreshed within its
-- TTL (its node died) expires, and whoever next touches the channel removes it and tells
-- the channel. Join and leave travel on the channel itself, so every subscriber gets each
-- once, whatever the number of nodes.

local function presence_keys(channel)
  return '{' .. channel .. '}:p', '{' .. channel .. '}:z'
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function announce(channel, kind, client, info)
  send(channel, cmsgpack.pack({ v = LIBRARY_VERSION, k = kind, c = client, i = info }))
end

local function keep_for(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Removes at most `limit` expired entries, telling the channel each one left.
local function sweep(channel, entries, expiry, limit)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now_ms(), 'LIMIT', 0, limit)
  for _, client in ipairs(gone) do
    redis.call('ZREM', expiry, client)
    redis.call('HDEL', entries, client)
    announce(channel, 'leave', client, 'null')
  end
end

-- FCALL roomcast_presence_join 1 <channel> <ttl_ms> <client> <info>
local function presence_join(keys, args)
  local entries, expiry = presence_keys(keys[1])
  local ttl, client, info = tonumber(args[1]), args[2], args[3]
  local new = redis.call('ZADD', expiry, now_ms() + ttl, client)
  redis.call('HSET', entries, client, info)
  keep_for(entries, ttl)
  keep_for(expiry, ttl)
  if new == 1 then
    announce(keys[1], 'join', client, info)
  end
  return new
end

-- FCALL roomcast_presence_leave 1 <channel> <client>
local function presence_leave(keys, args)
  local entries, expiry = presence_keys(keys[1])
  local gone = redis.call('ZREM', expiry, args[1])
  redis.call('HDEL', entries, args[1])
  if gone == 1 then
    announce(keys[1], 'leave', args[1], 'null')
  end
  return gone
end

-- FCALL roomcast_presence_refresh 1 <channel> <ttl_ms> <client1> <info1> ...
-- A node's periodic refresh of its own clients (re-adding any that Redis forgot), and a
-- sweep of entries that expired.
local function presence_refresh(keys, args)
  local entries, expiry = presence_keys(keys[1])
  local ttl = tonumber(args[1])
  local until_ms = now_ms() + ttl
  for i = 2, #args - 1, 2 do
    redis.call('ZADD', expiry, until_ms, args[i])
    redis.call('HSET', entries, args[i], args[i + 1])
  end
  keep_for(entries, ttl)
  keep_for(expiry, ttl)
  sweep(keys[1], entries, expiry, 1000)
  return 1
end

-- FCALL roomcast_presence 1 <channel> <cursor> <count>
-- One page: {next cursor ("0" when done), client1, info1, ...}.
local function presence_page(keys, args)
  local entries, expiry = presence_keys(keys[1])
  sweep(keys[1], entries, expiry, 1000)
  local page = redis.call('HSCAN', entries, args[1], 'COUNT', tonumber(args[2]))
  local out = { page[1] }
  for _, v in ipairs(page[2]) do
    out[#out + 1] = v
  end
  return out
end

-- FCALL roomcast_presence_count 1 <channel>: members whose entry has not expired; cheap
-- (a sorted-set range count) however large the room.
local function presence_count(keys, args)
  local _, expiry = presence_keys(keys[1])
  return redis.call('ZCOUNT', expiry, '(' .. now_ms(), '+inf')
end

-- FCALL roomcast_version 0: the library's version. An incompatible change to a function's
-- arguments or replies gets a new function name; this number says which set is loaded.
redis.register_function{
  function_name = 'roomcast_version',
  callback = function() return LIBRARY_VERSION end,
  flags = { 'no-writes' },
}
redis.register_function('roomcast_publish', publish)
redis.register_function('roomcast_history', history)
redis.register_function('roomcast_presence_join', presence_join)
redis.register_function('roomcast_presence_leave', presence_leave)
redis.register_function('roomcast_presence_refresh', presence_refresh)
redis.register_function('roomcast_presence', presence_page)
redis.register_function('roomcast_presence_count', presence_count)
