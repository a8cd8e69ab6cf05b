"""The Lua scripts of the Redis room store (udpchat.stores.redis), and its key names.

Every change to a room that must be atomic is one script, run with EVALSHA, so that several
relays on one Redis can never interleave inside it: numbering an event, taking a nickname,
moving a session, noticing a dead relay. All keys of a room start with ``udpchat:{ROOM}:``;
the braces are a Redis Cluster hash tag, so one room lives in one slot and the scripts may
name keys they build from the prefix (they never reach another slot). docs/scaling.md lists
what each key holds.

Relay ids are written in hex (16 characters), session tokens too; a member's record is
``RELAY SECRET NICK`` (hex, hex, the nickname: nicknames hold no whitespace), a nickname's
claim ``RELAY TOKEN`` (hex), so that the scripts can read the relay from the first 16 bytes.
"""

from __future__ import annotations

__all__ = [
    "APPEND", "CLAIM", "FORGET", "HOUSEKEEP", "MOVE", "PRIVATE", "RELEASE", "Keys",
]

# A new epoch is a room without history: the keys of the old one go with it.
_START_EPOCH = """
local function epoch_of(prefix, fresh)
  local epoch = redis.call('GET', prefix .. 'epoch')
  if not epoch then
    epoch = fresh
    redis.call('DEL', prefix .. 'seq', prefix .. 'log', prefix .. 'ids', prefix .. 'idorder',
               prefix .. 'members')
    for _, relay in ipairs(redis.call('SMEMBERS', prefix .. 'relays')) do
      redis.call('DEL', prefix .. 'lost:' .. relay)
    end
    redis.call('SET', prefix .. 'epoch', epoch)
  end
  return epoch
end

-- Redis lost part of the room under the same epoch: its seq is behind what a relay has seen
-- (a restart from an AOF or RDB that lost the last writes), or behind the stream's newest id
-- (the seq key evicted or deleted). Numbers would be given twice, or every XADD would fail:
-- the room starts a new epoch, as when the epoch key is gone.
local function out_of_order(prefix, seen)
  local seq = tonumber(redis.call('GET', prefix .. 'seq') or '0')
  if seq < seen then return true end
  local top = redis.call('XREVRANGE', prefix .. 'log', '+', '-', 'COUNT', 1)
  return top[1] ~= nil and tonumber(string.match(top[1][1], '^%d+')) > seq
end

local function renew(prefix, fresh)
  redis.call('DEL', prefix .. 'epoch')
  return epoch_of(prefix, fresh)
end
"""

# KEYS: -. ARGV: prefix, the epoch the relay knows, a fresh epoch (used if the room has none),
# the newest seq the relay has seen, msgid, origin relay, payload, stream cap, msgid cap, the
# append's number at its relay, a deadline on Redis's clock (ms): a script that runs
# after it appends nothing ({epoch, -1, 0, {}}), since its relay has given up waiting and told
# the member the post was refused (Redis was paused, or the network slow); and optionally
# '0' when the relay reads the entries in between itself (appends sent together, followed by
# one XRANGE for all of them).
# Returns {epoch, seq, new (1/0), entries}: for a new event, the log's entries numbered above
# the seq the relay had seen and below the new one (none with '0'); for a msgid already
# logged, its seq and
# its entry (none if trimmed from the stream); in an epoch the relay does not know yet,
# nothing is appended ({epoch, 0, 0, {}}): the relay restarts its room first. A room whose
# seq is behind the seq the relay has seen or behind its stream starts a new epoch (the same).
APPEND = _START_EPOCH + """
local prefix = ARGV[1]
local epoch = epoch_of(prefix, ARGV[3])
if epoch ~= ARGV[2] then return {epoch, 0, 0, {}} end
local seen = tonumber(ARGV[4])
if out_of_order(prefix, seen) then return {renew(prefix, ARGV[3]), 0, 0, {}} end
local now = redis.call('TIME')
if now[1] * 1000 + math.floor(now[2] / 1000) > tonumber(ARGV[11]) then
  return {epoch, -1, 0, {}}
end
local msgid = ARGV[5]
local log = prefix .. 'log'
if msgid ~= '' then
  local old = redis.call('HGET', prefix .. 'ids', msgid)
  if old then
    return {epoch, tonumber(old), 0, redis.call('XRANGE', log, old .. '-0', old .. '-0')}
  end
end
local seq = redis.call('INCR', prefix .. 'seq')
redis.call('XADD', log, 'MAXLEN', '~', ARGV[8], seq .. '-0',
           'o', ARGV[6], 'n', ARGV[10], 'm', msgid, 'e', ARGV[7])
if msgid ~= '' then
  redis.call('HSET', prefix .. 'ids', msgid, seq)
  if redis.call('RPUSH', prefix .. 'idorder', msgid) > tonumber(ARGV[9]) then
    redis.call('HDEL', prefix .. 'ids', redis.call('LPOP', prefix .. 'idorder'))
  end
end
local between = {}
if ARGV[12] ~= '0' and seq - 1 > seen then
  between = redis.call('XRANGE', log, (seen + 1) .. '-0', (seq - 1) .. '-0')
end
return {epoch, seq, 1, between}
"""

# A relay is alive while its key exists; a claim whose relay is not alive is free.
_ALIVE = """
local function alive(prefix, relay)
  return redis.call('EXISTS', prefix .. 'relay:' .. relay) == 1
end
"""

# KEYS: the nickname's claim. ARGV: prefix, claim value (RELAY TOKEN), ttl ms.
# Returns 1 if the claim is (now) this session's, 0 if a live member of any relay holds it.
CLAIM = _ALIVE + """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[2] and alive(ARGV[1], string.sub(held, 1, 16)) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: claims to let go. ARGV: the session token (hex) that must hold each.
RELEASE = """
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and string.sub(held, 18) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""

# KEYS: the members hash. ARGV: a session token (hex), this relay. Forgets the member only if
# it is still this relay's (a session that moved to another relay is that relay's now).
FORGET = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if record and string.sub(record, 1, 16) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: the members hash, the new nickname's claim, then claims the old session held.
# ARGV: prefix, this relay, old token, new token (hex), the new record, the new claim, ttl.
# Returns the relay the old session was on ('' if its record is gone: it left, or its relay
# was lost and it is being announced as left; the new record is written all the same, and
# the caller announces the member anew) and whether that relay was told.
MOVE = _ALIVE + """
local prefix, relay = ARGV[1], ARGV[2]
local old = redis.call('HGET', KEYS[1], ARGV[3])
for i = 3, #KEYS do
  local held = redis.call('GET', KEYS[i])
  if held and string.sub(held, 18) == ARGV[3] then redis.call('DEL', KEYS[i]) end
end
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[7])
if not old then return {'', 0} end
local from = string.sub(old, 1, 16)
if from ~= relay and alive(prefix, from) then
  redis.call('XADD', prefix .. 'inbox:' .. from, 'MAXLEN', '~', 1000, '*',
             'k', 'm', 'a', ARGV[3], 'd', '')
  return {from, 1}
end
return {from, 0}
"""

# KEYS: the recipient's claim. ARGV: prefix, this relay, the nickname, the message.
# Returns 0: nobody (alive) holds the nickname; 1: a member of this relay; 2: sent.
PRIVATE = _ALIVE + """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local to = string.sub(held, 1, 16)
if to == ARGV[2] then return 1 end
if not alive(ARGV[1], to) then return 0 end
redis.call('XADD', ARGV[1] .. 'inbox:' .. to, 'MAXLEN', '~', 1000, '*',
           'k', 'p', 'a', ARGV[3], 'd', ARGV[4])
return 2
"""

# Once per housekeeping period, for one relay: keep it alive, keep its claims, notice the
# relays that died. KEYS: this relay's claims. ARGV: prefix, this relay, ttl ms, a fresh
# epoch, the epoch the relay knows, the newest seq it has seen, one claim value per key, then
# a deadline on Redis's clock (ms; a script run later changes nothing: its relay gave up on it)
# and whether the relay's last round came on time ('1': only then does it judge the others).
# Returns {epoch, revived (1: this relay's key had expired), lost claims (indexes into KEYS,
# held by another session now), owed: {relay, nick, nick, ...}, ..., Redis's TIME}, where
# owed is the whole of lost:RELAY (this relay) every round, so that a lost reply loses
# nothing: the relay queues what it has not queued yet; and late (1: run after the deadline,
# nothing done, the rest of the answer empty).
# A room whose seq is behind the seq this relay has seen, or behind its stream, starts a new
# epoch (as in APPEND).
# A claim that expired (an outage longer than the ttl) is taken again; in a new epoch the
# relay's sessions are reset (their claims are not kept).
# A relay whose key expired is removed from the set by exactly one relay (the script runs
# alone), which gets the nicknames of the members it still had and removes them; they stay
# in lost:RELAY (this relay) until its core has taken them, so that if this relay dies first,
# the relay that notices passes them on (and so on).
HOUSEKEEP = _START_EPOCH + _ALIVE + """
local prefix, relay, ttl = ARGV[1], ARGV[2], ARGV[3]
local deadline, steady = tonumber(ARGV[#KEYS + 7]), ARGV[#KEYS + 8] == '1'
local now = redis.call('TIME')
if now[1] * 1000 + math.floor(now[2] / 1000) > deadline then
  -- run after its relay gave up waiting (Redis was paused): its view of who is alive is old
  return {ARGV[5], 0, {}, {}, now, 1}
end
local epoch = epoch_of(prefix, ARGV[4])
if epoch == ARGV[5] and out_of_order(prefix, tonumber(ARGV[6])) then
  epoch = renew(prefix, ARGV[4])
end
local revived = 0
if not redis.call('SET', prefix .. 'relay:' .. relay, '1', 'XX', 'PX', ttl) then
  redis.call('SET', prefix .. 'relay:' .. relay, '1', 'PX', ttl)
  revived = 1
end
redis.call('SADD', prefix .. 'relays', relay)
redis.call('PEXPIRE', prefix .. 'inbox:' .. relay, ttl * 4)
local lost = {}
local claims = KEYS
if epoch ~= ARGV[5] then claims = {} end
for i, key in ipairs(claims) do
  local value = ARGV[6 + i]
  local held = redis.call('GET', key)
  if held == value or not held or not alive(prefix, string.sub(held, 1, 16)) then
    redis.call('SET', key, value, 'PX', ttl)
  else
    table.insert(lost, i)
  end
end
local mine = prefix .. 'lost:' .. relay
-- Only a relay whose own rounds came on time may judge the others: after an outage (Redis
-- paused or away), every relay's key may have expired meanwhile; they get a period to renew.
local judged = {}
if steady then judged = redis.call('SMEMBERS', prefix .. 'relays') end
for _, other in ipairs(judged) do
  if other ~= relay and not alive(prefix, other) then
    redis.call('SREM', prefix .. 'relays', other)
    local gone = {other}
    local members = redis.call('HGETALL', prefix .. 'members')
    for j = 1, #members, 2 do
      local record = members[j + 1]
      if string.sub(record, 1, 16) == other then
        redis.call('HDEL', prefix .. 'members', members[j])
        local nick = string.sub(record, string.find(record, ' ', 18, true) + 1)
        table.insert(gone, nick)
      end
    end
    redis.call('DEL', prefix .. 'inbox:' .. other)
    -- What this relay must announce until its core has taken it (lost:RELAY); what the
    -- dead relay had been given to announce and had not taken is this relay's now.
    redis.call('HSET', mine, other, table.concat(gone, ' ', 2))
    local owed = redis.call('HGETALL', prefix .. 'lost:' .. other)
    for j = 1, #owed, 2 do redis.call('HSET', mine, owed[j], owed[j + 1]) end
    redis.call('DEL', prefix .. 'lost:' .. other)
  end
end
local dead = {}
local owed = redis.call('HGETALL', mine)
for j = 1, #owed, 2 do
  local passed = {owed[j]}
  for nick in string.gmatch(owed[j + 1], '%S+') do table.insert(passed, nick) end
  table.insert(dead, passed)
end
return {epoch, revived, lost, dead, redis.call('TIME'), 0}
"""


class Keys:
    """The key names of one room."""

    def __init__(self, room: str) -> None:
        self.prefix = f"udpchat:{{{room}}}:"
        self.epoch = self.prefix + "epoch"
        self.seq = self.prefix + "seq"
        self.log = self.prefix + "log"
        self.members = self.prefix + "members"
        self.relays = self.prefix + "relays"

    def nick(self, key: str) -> str:
        return f"{self.prefix}nick:{key}"

    def relay(self, relay: str) -> str:
        return f"{self.prefix}relay:{relay}"

    def inbox(self, relay: str) -> str:
        return f"{self.prefix}inbox:{relay}"

    def lost(self, relay: str) -> str:
        return f"{self.prefix}lost:{relay}"
