-- quotad's Redis store, part 3 of 4 (see prelude.lua): how state is kept in Redis. A stored layout outlives a
-- version: during a rolling upgrade the previous version reads what this one writes. So add fields, never
-- rename or reinterpret one, and leave a field out only where the previous version reads it absent as empty
-- (the lease's fields, below; test redis_a_lease_keeps_the_fields_the_previous_version_reads).

---------------------------------------------------------------------------------------------------------
-- A level's hash

-- A level's hash holds only these four fields: t (the bucket's TAT), i and b (its interval and burst), f
-- (leases in flight).
local function level_load(key)
  local v = redis.call('HMGET', key, 't', 'i', 'b', 'f')
  local t, i, b, f = v[1], v[2], v[3], v[4]
  local bucket = nil
  if i then bucket = { d = rel(t) or -FAR, i = tonumber(i), b = tonumber(b) } end
  local cell = { key = key, bucket = bucket, f = tonumber(f or '0'), found = (t or i or b or f) and true or false,
                 st = t or nil }
  -- The interval and burst as stored (a write leaves them alone when they did not change).
  if bucket then cell.si = bucket.i; cell.sb = bucket.b end
  if f then cell.sf = cell.f end
  return cell
end

-- Writes what changed, and only then the TTL: a key's TTL was set, when its TAT was, to a second past the
-- moment its bucket is full again, so a call that leaves the TAT and the leases as they were (a denial,
-- mostly) leaves the TTL right too, and costs no write at all.
local function level_save(cell, hold_ms)
  local full = cell.bucket == nil or cell.bucket.d <= 0
  if cell.f <= 0 and full then
    if cell.found then redis.call('DEL', cell.key) end
    return
  end
  local bk = cell.bucket
  local f, changed = {}, false
  if bk then
    if bk.d > 0 then
      local t = abs(bk.d)
      if t ~= cell.st then f[1] = 't'; f[2] = t end
    elseif cell.st then redis.call('HDEL', cell.key, 't'); changed = true end
    if bk.i ~= cell.si or bk.b ~= cell.sb then
      f[#f + 1] = 'i'; f[#f + 1] = string.format('%d', bk.i)
      f[#f + 1] = 'b'; f[#f + 1] = string.format('%d', bk.b)
    end
  elseif cell.si or cell.st then
    redis.call('HDEL', cell.key, 't', 'i', 'b'); changed = true
  end
  if cell.f ~= cell.sf then f[#f + 1] = 'f'; f[#f + 1] = cell.f end
  if #f > 0 then redis.call('HSET', cell.key, unpack(f)); changed = true end
  if not changed then return end
  local ms = 1000
  if bk and bk.d > 0 then ms = ms + bk.d / 1000000 end
  if cell.f > 0 then ms = math.max(ms, hold_ms or 0) end
  if cell.found then
    -- Every level key is written with a TTL, so it only has to grow: one call.
    redis.call('PEXPIRE', cell.key, math.max(math.ceil(ms), 1), 'GT')
  else
    redis.call('PEXPIRE', cell.key, math.max(math.ceil(ms), 1))
  end
end

---------------------------------------------------------------------------------------------------------
-- A breaker's hash (the state engine/breaker/state.rs keeps in memory).

local function breaker_load(key, spec)
  local h, found = hgetall(key)
  if not found then return breaker_new(spec) end
  local b = { ph = h.ph, s = rel(h.s) or 0, u = rel(h.u) or 0, pl = tonumber(h.pl or '0'),
              sc = tonumber(h.sc or '0'), c = tonumber(h.c or '0'), r = tonumber(h.r or '0'),
              e = tonumber(h.e or '0'), wl = tonumber(h.wl or '0'), w = {}, dirty = false }
  for _, s in ipairs(split(h.w, ';')) do
    local p = split(s, ':')
    local ep = tonumber(p[1])
    b.w[(ep % SLOTS) + 1] = { ep = ep, calls = tonumber(p[2]), fails = tonumber(p[3]) }
  end
  return b
end

local function breaker_save(key, b)
  if not b.dirty then return end
  if b.ph == 'c' and b.c == 0 and window_totals(b) == 0 then redis.call('DEL', key); return end
  local w = {}
  for i = 1, SLOTS do
    local s = b.w[i]
    if s then w[#w + 1] = string.format('%d:%d:%d', s.ep, s.calls, s.fails) end
  end
  redis.call('HSET', key, 'ph', b.ph, 's', abs(b.s), 'u', abs(b.u), 'pl', b.pl, 'sc', b.sc, 'c', b.c,
             'r', b.r, 'e', b.e, 'wl', string.format('%d', b.wl), 'w', table.concat(w, ';'))
  local ms = b.wl / 1000000 + 1000
  if b.ph == 'o' then ms = ms + math.max(b.u, 0) / 1000000 end
  keep(key, ms)
end

---------------------------------------------------------------------------------------------------------
-- A resource's pressure (adaptive rate, pause, recent reporters) and its live lease count.

local function pressure_load(key)
  local h, found = hgetall(key)
  local p = { key = key, found = found, fa = tonumber(h.fa or '1'), ld = rel(h.ld), ls = rel(h.ls) or -FAR,
              pu = rel(h.pu) or -FAR, n = tonumber(h.n or '0'), qw = tonumber(h.qw or '0'), rep = {},
              dirty = false }
  for k, v in pairs(h) do
    if string.sub(k, 1, 2) == 'q:' then p.rep[string.sub(k, 3)] = rel(v) end
  end
  return p
end

local function pressure_save(p, quiet)
  if not p.dirty then return end
  quiet = math.max(quiet, p.qw)
  local idle = p.fa >= 1 and p.pu <= 0 and p.n <= 0
  for _, at in pairs(p.rep) do if at > -quiet then idle = false end end
  if idle then redis.call('DEL', p.key); return end
  redis.call('DEL', p.key)
  local ms = 1000 + quiet / 1000000
  local f = { 'fa', string.format('%.17g', p.fa), 'ls', abs(p.ls), 'pu', abs(p.pu), 'n', p.n, 'qw', string.format('%d', quiet) }
  if p.ld ~= nil then f[#f + 1] = 'ld'; f[#f + 1] = abs(p.ld) end
  for who, at in pairs(p.rep) do
    if at > -quiet then f[#f + 1] = 'q:' .. who; f[#f + 1] = abs(at) end
  end
  redis.call('HSET', p.key, unpack(f))
  if p.fa < 1 then ms = math.max(ms, 86400000) end
  if p.pu > 0 then ms = math.max(ms, p.pu / 1000000 + 1000) end
  if p.n > 0 then ms = math.max(ms, 86400000) end
  keep(p.key, ms)
end

---------------------------------------------------------------------------------------------------------
-- Leases. A lease is a hash under the shard's prefix; the shard's `x` sorted set indexes expiries (score:
-- microseconds, rounded up) and `ids` lists live ids in order (for admin listings). An ended lease leaves a
-- tombstone (`g` = r released, e expired) for a minute.

local PREFIX, EXP, IDS

local function use_shard(prefix) PREFIX = prefix; EXP = prefix .. 'x'; IDS = prefix .. 'ids' end

local function lease_key(hex) return PREFIX .. 'l:' .. hex end

-- A lease's fields; those it was granted without (no breaker, probe, adaptive rate or descriptors) are not
-- stored, and read as ''. (The previous version reads these absent fields as '' too; it needs `cid` and
-- `own`, so those are always stored.)
local OPTIONAL = { 'cid', 'own', 'bk', 'bs', 'pr', 'ad', 'ds' }

local function lease_load(key)
  local l, found = hgetall(key)
  if found then
    for _, k in ipairs(OPTIONAL) do if l[k] == nil then l[k] = '' end end
  end
  return l, found
end

-- (Formatted here: Lua would print a number this large with 14 digits.)
local function exp_score(off) return string.format('%d', math.ceil((NOW_S * 1000000) + (NOW_N + off) / 1000)) end

local function lease_levels(l)
  local out = {}
  for _, s in ipairs(split(l.lv, '\30')) do
    local p = split(s, '\31')
    out[#out + 1] = { key = p[1], slot = p[2] == '1', charged = p[3] == '1', rate = rate_spec(p[4]),
                      max_debt = tonumber(p[5] or '0') }
  end
  return out
end

local function free_slots(l)
  for _, lv in ipairs(lease_levels(l)) do
    if lv.slot then
      local f = tonumber(redis.call('HGET', lv.key, 'f') or '0')
      if f > 0 then
        local cell = level_load(lv.key)
        cell.f = f - 1
        level_save(cell, 0)
      end
    end
  end
end

local function return_probe(l)
  if l.pr == nil or l.pr == '' or l.bk == nil or l.bk == '' then return end
  local spec = breaker_spec(l.bs)
  if spec == nil then return end
  local b = breaker_load(l.bk, spec)
  breaker_cancel_probe(b, tonumber(l.pr))
  breaker_save(l.bk, b)
end

-- Counts a resource's live leases (what listings show), in its pressure hash, which must outlive them: an
-- Acquire (`found`: the hash existed when this call loaded it) keeps it a day past the grant, or past the
-- lease's hold if longer. (A TTL given only when the hash is made lost the count of a resource whose leases
-- stayed live for over a day; one PEXPIRE per Acquire costs less than reading back when it was last given.)
local DAY_MS = 86400000

local function count_lease(rkey, delta, found, hold_ms)
  if delta > 0 then
    local ms = math.ceil(math.max(DAY_MS, hold_ms))
    if found then
      redis.call('HINCRBY', rkey, 'n', delta)
      redis.call('PEXPIRE', rkey, ms, 'GT')
    else
      redis.call('HSET', rkey, 'n', delta)
      redis.call('PEXPIRE', rkey, ms)
    end
    return
  end
  if redis.call('HINCRBY', rkey, 'n', delta) <= 0 then
    -- Nothing live: a hash that held only the count goes.
    if redis.call('HLEN', rkey) == 1 then redis.call('DEL', rkey); return end
    redis.call('HSET', rkey, 'n', 0)
  end
end

-- An ended lease keeps its fields for a minute, marked `g` (why it ended), so a late call is answered. A
-- lease's key lives until a minute past its expiry (as granted or renewed), so one that has expired keeps
-- that TTL: its tombstone goes a minute after it expired.
local function tombstone(key, hex, why, l)
  redis.call('HSET', key, 'g', why)
  if (rel(l.x) or 0) > 0 then redis.call('PEXPIRE', key, TOMBSTONE_MS) end
  redis.call('ZREM', EXP, hex)
  redis.call('ZREM', IDS, hex)
end

-- Ends a live lease as expired (or revoked): frees its slots, hands back its probe.
local function reclaim(hex, key, l)
  free_slots(l)
  return_probe(l)
  count_lease(l.rk, -1)
  tombstone(key, hex, 'e', l)
end

-- Reclaims up to `limit` leases of this shard that expired by now; returns them and whether more remain.
local function reclaim_expired(limit)
  local out = {}
  local now_us = string.format('%d', math.floor(NOW_S * 1000000 + NOW_N / 1000))
  local due = redis.call('ZRANGEBYSCORE', EXP, '-inf', now_us, 'LIMIT', 0, limit + 1)
  local more = false
  for i, hex in ipairs(due) do
    if i > limit then more = true; break end
    local key = lease_key(hex)
    local l, found = lease_load(key)
    if not found or l.g then
      redis.call('ZREM', EXP, hex)
    elseif (rel(l.x) or 0) <= 0 then
      reclaim(hex, key, l)
      out[#out + 1] = hex; out[#out + 1] = l.res; out[#out + 1] = l.rule
    end
  end
  return out, more
end

local function gone_reason(l, found)
  if not found then return 'unknown_lease' end
  if l.g == 'e' then return 'expired' end
  return 'already_released'
end
