"""The Lua scripts of cluster presence: each join, leave and reaping is one
atomic step in Redis (key layout in chat.presence.redis_store)."""

# KEYS: room users, this instance's members, room sequence, reaped sids;
# and, for a login, what it must check (chat.moderation.store.login_keys):
# three bans, the room's moderators, its slow mode.
# Returns {ok, count, replaced sid, seq, rejoined, names, moderator, slow}:
# ``rejoined`` is 1 when the room was told this session had left (a
# reaping), so it must hear a join; ``names`` lists the room when it has at
# most ARGV[6] users (the login's list, in the same round trip); the last
# two are the moderators' entry for this name and the slow mode ('' when
# none). A ban refuses before anything is written: {-1, 0, '', 0, 0, ban}.
# A name is taken from its holder with the holder's token and nothing else:
# not during a hand-over, not after an outage. A refusal returns the
# holder's name (the rebuild after an outage announces it).
JOIN = """
local checked = {}
if KEYS[5] then
  for i = 5, 7 do
    local ban = redis.call('GET', KEYS[i])
    if ban then return {-1, 0, '', 0, 0, ban} end
  end
  checked = {redis.call('HGET', KEYS[8], ARGV[1]) or '',
             redis.call('GET', KEYS[9]) or ''}
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = ''
if cur then
  local holder = cjson.decode(cur)
  if holder.token ~= ARGV[3] then
    return {0, redis.call('HLEN', KEYS[1]), '', 0, 0, holder.name}
  end
  replaced = holder.sid
  if holder.sid ~= ARGV[4] then
    redis.call('HDEL', ARGV[5] .. 'instance:' .. holder.instance .. ':members',
               holder.sid)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
local seq = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[7])
local rejoined = redis.call('HDEL', KEYS[4], ARGV[4])
local count = redis.call('HLEN', KEYS[1])
local names = {}
if count <= tonumber(ARGV[6]) then
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    table.insert(names, cjson.decode(v).name)
  end
end
return {1, count, replaced, seq, rejoined, names, unpack(checked)}
"""

# KEYS: room users, this instance's members, room sequence, the rooms
# counted (chat.presence.rooms), the room's history. ARGV: name key, sid, room, the
# sequence's TTL. A room left with neither members nor history no longer
# counts toward MAX_ROOMS; the fourth value says it was uncounted.
LEAVE = """
redis.call('HDEL', KEYS[2], ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).sid == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  local left = redis.call('HLEN', KEYS[1])
  local uncounted = 0
  if left == 0 and redis.call('EXISTS', KEYS[5]) == 0 then
    uncounted = redis.call('ZREM', KEYS[4], ARGV[3])
  end
  local seq = redis.call('INCR', KEYS[3])
  if left == 0 then
    redis.call('DEL', KEYS[3])
  else
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
  return {1, left, seq, uncounted}
end
return {0, redis.call('HLEN', KEYS[1]), 0, 0}
"""

# Removes every member an instance registered. Unless forced (an instance
# cleaning up after itself), only the caller that wins the SREM does it, and
# it remembers the reaped sessions: if one turns out to be alive (its
# instance was only cut off), its rebuild tells the room it is back.
REAP = """
if ARGV[3] ~= '1' and redis.call('SREM', KEYS[1], ARGV[2]) == 0 then
  return {}
end
local mkey = ARGV[1] .. 'instance:' .. ARGV[2] .. ':members'
local reaped = ARGV[1] .. 'reaped'
local flat = redis.call('HGETALL', mkey)
local out = {}
for i = 1, #flat, 2 do
  local m = cjson.decode(flat[i + 1])
  local rkey = ARGV[1] .. 'room:' .. m.room .. ':users'
  local lname = m.key
  local cur = redis.call('HGET', rkey, lname)
  if cur and cjson.decode(cur).sid == flat[i] then
    redis.call('HDEL', rkey, lname)
    if ARGV[3] ~= '1' then
      redis.call('HSET', reaped, flat[i], '1')
      redis.call('EXPIRE', reaped, 86400)
    end
    table.insert(out, m.room)
    table.insert(out, m.name)
    table.insert(out, redis.call('HLEN', rkey))
    local skey = ARGV[1] .. 'room:' .. m.room .. ':seq'
    table.insert(out, redis.call('INCR', skey))
    redis.call('EXPIRE', skey, ARGV[4])
    if redis.call('HLEN', rkey) == 0 then
      redis.call('DEL', skey)
      if redis.call('EXISTS', ARGV[1] .. 'history:' .. m.room) == 0 then
        redis.call('ZREM', ARGV[1] .. 'rooms', m.room)
      end
    end
  end
end
redis.call('DEL', mkey)
return out
"""


# A room's presence sequence lives a day past its last join or leave: an
# instance forgets a room's newest count once it has no member there (after
# ROOM_LINGER_S), so a sequence that starts again after a day misleads none.
# An empty room's sequence goes with its last member: every instance forgets
# a room's count when told it is empty (chat.presence.counts), so the next join
# starts again from 1 and a one-off room leaves no key.
SEQ_TTL_S = 86400


# -- on a Redis Cluster -----------------------------------------------------
# Each script touches one room's slot (chat.cluster.keys); what JOIN and
# LEAVE do to the instance's member list, the reaped sessions and the room
# count happens beside them (chat.presence.sharded).

# KEYS: room users, room sequence. ARGV: name key, member JSON, token, sid,
# list up to, the sequence's TTL. Returns {ok, count, replaced sid, seq,
# the replaced session's instance ('' when none or this session), names}.
JOIN_ROOM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local replaced, previous = '', ''
if cur then
  local holder = cjson.decode(cur)
  if holder.token ~= ARGV[3] then
    return {0, redis.call('HLEN', KEYS[1]), '', 0, '', holder.name}
  end
  replaced = holder.sid
  if holder.sid ~= ARGV[4] then previous = holder.instance end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local count = redis.call('HLEN', KEYS[1])
local names = {}
if count <= tonumber(ARGV[5]) then
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    table.insert(names, cjson.decode(v).name)
  end
end
return {1, count, replaced, seq, previous, names}
"""

# A leave, and a reaping of one member: the name goes if this session holds
# it. KEYS: room users, room sequence, the room's history. ARGV: name key,
# sid, the sequence's TTL. Returns {removed, count, seq, uncount}: uncount
# is 1 when the room is left with neither members nor history (it no longer
# counts toward MAX_ROOMS).
LEAVE_ROOM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).sid == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  local left = redis.call('HLEN', KEYS[1])
  local uncount = 0
  if left == 0 and redis.call('EXISTS', KEYS[3]) == 0 then uncount = 1 end
  local seq = redis.call('INCR', KEYS[2])
  if left == 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
  return {1, left, seq, uncount}
end
return {0, redis.call('HLEN', KEYS[1]), 0, 0}
"""
