-- quotad's Redis store, part 3 of 4 (see prelude.lua): how state is kept in Redis. Every hash's fields are
-- named in engine/redis/protocol.rs (`stored`): <HASH>_F.name is the name this library writes (readable, or
-- with `redis.layout = "compact"` the one- or two-letter names earlier versions wrote and read), <HASH>_O.name
-- the other layout's. Loads read either (hgetall, level_load), so state written by an earlier version is
-- read as it was. Add fields, never reinterpret one, and leave a field out only where every reader takes it
-- absent as empty (the lease's fields, below).

---------------------------------------------------------------------------------------------------------
-- A level's hash

-- A level's hash holds its leases in flight (in_flight) and its limit: a token bucket's tat (its TAT),
-- interval and burst, or a window's algorithm, window_start (ms since the epoch), count, previous (the
-- window before's, sliding only) and period (ns). A hash with the other layout's fields (`other`) is
-- rewritten in this one when saved.
local LEVEL_NAMES = { 'tat', 'interval', 'burst', 'in_flight', 'algorithm', 'window_start', 'count', 'previous',
                      'period', 'limit' }


-- (Called while the library loads, where Redis offers no `ipairs`.)
local function level_fields(T, names)
  local out = {}
  for k = 1, #names do out[k] = T[names[k]] end
  return out
end

-- The stored names of every level field, and of a token bucket's (with `algorithm`, which says a window is
-- stored instead), in this layout and the other: made once, when the library loads.
local LEVEL_ALL = { level_fields(LEVEL_F, LEVEL_NAMES), level_fields(LEVEL_O, LEVEL_NAMES) }
local BUCKET_NAMES = { 'tat', 'interval', 'burst', 'in_flight', 'algorithm' }
local LEVEL_BUCKET = { level_fields(LEVEL_F, BUCKET_NAMES), level_fields(LEVEL_O, BUCKET_NAMES) }

-- A level whose rule has `kind` (nil: unknown) as its algorithm. A token bucket reads only its own fields:
-- a window stored there instead (the rule changed) reads as no limit, and its fields go when saved.
local function level_load(key, kind)
  local other = false
  local names = LEVEL_ALL
  if kind == 'token_bucket' then names = LEVEL_BUCKET end
  local v = redis.call('HMGET', key, unpack(names[1]))
  if not (v[1] or v[2] or v[3] or v[4] or v[5] or v[9]) then
    -- Absent, or written in the other layout (read only then: a live level is in this one).
    v = redis.call('HMGET', key, unpack(names[2]))
    other = (v[1] or v[2] or v[3] or v[4] or v[5] or v[9]) and true or false
  end
  if names == LEVEL_BUCKET and v[5] then
    local cell = level_load(key, nil)
    cell.lim = nil
    return cell
  end
  local t, i, b, f = v[1], v[2], v[3], v[4]
  local lim = nil
  if i then lim = { kind = 'token_bucket', d = rel(t) or -FAR, i = tonumber(i), b = tonumber(b) }
  elseif v[5] and v[9] then
    lim = { kind = v[5], s = tonumber(v[6] or '0'), c = tonumber(v[7] or '0'), p = tonumber(v[8] or '0'),
            w = tonumber(v[9]), l = tonumber(v[10] or '0') }
  end
  local cell = { key = key, lim = lim, f = tonumber(f or '0'), st = t or nil, other = other,
                 found = (t or i or b or f or v[5] or v[9] or other) and true or false }
  -- The limit as stored (a write leaves it alone when it did not change).
  if lim and lim.kind == 'token_bucket' then cell.si = lim.i; cell.sb = lim.b
  elseif lim then cell.sw = { kind = lim.kind, s = lim.s, c = lim.c, p = lim.p, w = lim.w, l = lim.l } end
  if f then cell.sf = cell.f end
  return cell
end

-- The fields to write for a token bucket that changed (`f`, a flat list), and whether a field was deleted.
local function bucket_save(cell, bk, f)
  local F, deleted = LEVEL_F, false
  if cell.sw then
    redis.call('HDEL', cell.key, F.algorithm, F.window_start, F.count, F.previous, F.period, F.limit); deleted = true
  end
  if bk.d > 0 then
    local t = abs(bk.d)
    if t ~= cell.st then f[#f + 1] = F.tat; f[#f + 1] = t end
  elseif cell.st then redis.call('HDEL', cell.key, F.tat); deleted = true end
  if bk.i ~= cell.si or bk.b ~= cell.sb then
    f[#f + 1] = F.interval; f[#f + 1] = string.format('%d', bk.i)
    f[#f + 1] = F.burst; f[#f + 1] = string.format('%d', bk.b)
  end
  return deleted
end

-- The same for a window: only the fields that changed (a grant in the same window writes its count alone).
local function window_save(cell, st, f)
  local F, deleted = LEVEL_F, false
  if cell.si or cell.st then redis.call('HDEL', cell.key, F.tat, F.interval, F.burst); deleted = true end
  local was = cell.sw or {}
  if st.kind ~= was.kind then f[#f + 1] = F.algorithm; f[#f + 1] = st.kind end
  if st.s ~= was.s then f[#f + 1] = F.window_start; f[#f + 1] = string.format('%d', st.s) end
  if st.c ~= was.c then f[#f + 1] = F.count; f[#f + 1] = string.format('%d', st.c) end
  if st.p ~= was.p then f[#f + 1] = F.previous; f[#f + 1] = string.format('%d', st.p) end
  if st.w ~= was.w then f[#f + 1] = F.period; f[#f + 1] = string.format('%d', st.w) end
  if st.l ~= was.l then f[#f + 1] = F.limit; f[#f + 1] = string.format('%d', st.l) end
  return deleted
end

-- Writes what changed, and only then the TTL: a key's TTL was set, when its limit was, to a second past the
-- moment it is full again, so a call that leaves the limit and the leases as they were (a denial, mostly)
-- leaves the TTL right too, and costs no write at all.
local function level_save(cell, hold_ms)
  local st = cell.lim
  local L = st and LIMITERS[st.kind]
  if cell.f <= 0 and (st == nil or L.is_full(st)) then
    if cell.found then redis.call('DEL', cell.key) end
    return
  end
  local F = LEVEL_F
  local f, changed = {}, false
  if cell.other then
    -- Written by the other layout: drop its fields, and write every field of this one.
    redis.call('HDEL', cell.key, unpack(LEVEL_ALL[2]))
    cell.st, cell.si, cell.sb, cell.sw, cell.sf, cell.other, changed = nil, nil, nil, nil, nil, false, true
  end
  if st and st.kind == 'token_bucket' then changed = bucket_save(cell, st, f) or changed
  elseif st then changed = window_save(cell, st, f) or changed
  elseif cell.si or cell.st or cell.sw then
    redis.call('HDEL', cell.key, F.tat, F.interval, F.burst, F.algorithm, F.window_start, F.count, F.previous,
               F.period, F.limit)
    changed = true
  end
  if cell.f ~= cell.sf then f[#f + 1] = F.in_flight; f[#f + 1] = cell.f end
  if #f > 0 then redis.call('HSET', cell.key, unpack(f)); changed = true end
  if not changed then return end
  -- A fixed window's key expires a second after its window ends: set when its window was first written, so
  -- a write in the same window (same start and period, the same leases in flight) leaves it as it is.
  local was = cell.sw
  if st and st.kind == 'fixed_window' and was and was.kind == st.kind and was.s == st.s and was.w == st.w
     and cell.f == (cell.sf or 0) then
    return
  end
  local ms = 1000
  if st then ms = ms + L.reset_after(st) / 1000000 end
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
  local b = { ph = h.phase, s = rel(h.since) or 0, u = rel(h.open_until) or 0, pl = tonumber(h.probes_left or '0'),
              sc = tonumber(h.successes or '0'), c = tonumber(h.consecutive or '0'), r = tonumber(h.reopens or '0'),
              e = tonumber(h.epoch or '0'), wl = tonumber(h.window_len or '0'), w = {}, dirty = false }
  for _, s in ipairs(split(h.window, ';')) do
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
  local F = BREAKER_F
  redis.call('HSET', key, F.phase, b.ph, F.since, abs(b.s), F.open_until, abs(b.u), F.probes_left, b.pl,
             F.successes, b.sc, F.consecutive, b.c, F.reopens, b.r, F.epoch, b.e, F.window_len,
             string.format('%d', b.wl), F.window, table.concat(w, ';'))
  local ms = b.wl / 1000000 + 1000
  if b.ph == 'o' then ms = ms + math.max(b.u, 0) / 1000000 end
  keep(key, ms)
end

---------------------------------------------------------------------------------------------------------
-- A resource's pressure (adaptive rate, pause, recent reporters) and its live lease count.

local function pressure_load(key)
  local h, found = hgetall(key)
  local p = { key = key, found = found, fa = tonumber(h.factor or '1'), ld = rel(h.last_decrease),
              ls = rel(h.last_step) or -FAR, pu = rel(h.paused_until) or -FAR, n = tonumber(h.leases or '0'),
              qw = tonumber(h.quiet or '0'), kept = tonumber(h.kept or '0'), rep = {}, dirty = false }
  -- Reporters (this layout's prefix wins where both layouts hold one).
  local wlen, olen = #REPORTER_W, #REPORTER_O
  for k, v in pairs(h) do
    if string.sub(k, 1, wlen) == REPORTER_W then p.rep[string.sub(k, wlen + 1)] = rel(v)
    elseif string.sub(k, 1, olen) == REPORTER_O then
      local who = string.sub(k, olen + 1)
      if h[REPORTER_W .. who] == nil then p.rep[who] = rel(v) end
    end
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
  local F = PRESSURE_F
  local f = { F.factor, string.format('%.17g', p.fa), F.last_step, abs(p.ls), F.paused_until, abs(p.pu),
              F.leases, p.n, F.quiet, string.format('%d', quiet) }
  if p.ld ~= nil then f[#f + 1] = F.last_decrease; f[#f + 1] = abs(p.ld) end
  for who, at in pairs(p.rep) do
    if at > -quiet then f[#f + 1] = REPORTER_W .. who; f[#f + 1] = abs(at) end
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
-- stored, and read as ''. (Earlier versions read these absent fields as '' too; they need the client id and
-- the owner, so those are always stored.)
local OPTIONAL = { 'client_id', 'owner', 'breaker', 'breaker_spec', 'probe', 'adaptive', 'descriptors' }

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
  for _, s in ipairs(split(l.levels, '\30')) do
    local p = split(s, '\31')
    out[#out + 1] = { key = p[1], slot = p[2] == '1', charged = p[3] == '1', rate = rate_spec(p[4]),
                      max_debt = tonumber(p[5] or '0') }
  end
  return out
end

local function free_slots(l)
  for _, lv in ipairs(lease_levels(l)) do
    if lv.slot then
      local cell = level_load(lv.key)
      if cell.f > 0 then
        cell.f = cell.f - 1
        level_save(cell, 0)
      end
    end
  end
end

local function return_probe(l)
  if l.probe == nil or l.probe == '' or l.breaker == nil or l.breaker == '' then return end
  local spec = breaker_spec(l.breaker_spec)
  if spec == nil then return end
  local b = breaker_load(l.breaker, spec)
  breaker_cancel_probe(b, tonumber(l.probe))
  breaker_save(l.breaker, b)
end

-- Counts a resource's live leases (what listings show), in its pressure hash, which must outlive them: an
-- Acquire keeps it a day past the grant, or past the lease's hold if longer. The hash records how far its TTL
-- was last pushed (`kept`, ms since the epoch; the Acquire read it with the rest of the hash), and the TTL is
-- pushed a day further only when that no longer covers a day from now: a PEXPIRE costs Redis as much as the
-- rest of a grant's writes to this hash, so it is paid once a day, not once a grant. (`p`: the hash as this
-- call loaded it; nil for a release, which only counts down.)
local DAY_MS = 86400000

local function count_lease(rkey, delta, p, hold_ms)
  local F = PRESSURE_F
  if delta > 0 then
    local need = NOW_MS + math.max(DAY_MS, hold_ms)
    if p.found and p.kept >= need then
      redis.call('HINCRBY', rkey, F.leases, delta)
      return
    end
    local kept = math.ceil(need + DAY_MS)
    local ms = kept - NOW_MS
    if p.found then
      redis.call('HINCRBY', rkey, F.leases, delta)
      redis.call('HSET', rkey, F.kept, string.format('%d', kept))
      redis.call('PEXPIRE', rkey, ms, 'GT')
    else
      redis.call('HSET', rkey, F.leases, delta, F.kept, string.format('%d', kept))
      redis.call('PEXPIRE', rkey, ms)
    end
    return
  end
  if redis.call('HINCRBY', rkey, F.leases, delta) <= 0 then
    -- Nothing live: a hash that held only the count (and how far its TTL went) goes.
    redis.call('HDEL', rkey, F.kept)
    if redis.call('HLEN', rkey) == 1 then redis.call('DEL', rkey); return end
    redis.call('HSET', rkey, F.leases, 0)
  end
end

-- An ended lease keeps its fields for a minute, marked `g` (why it ended), so a late call is answered. A
-- lease's key lives until a minute past its expiry (as granted or renewed), so one that has expired keeps
-- that TTL: its tombstone goes a minute after it expired.
local function tombstone(key, hex, why, l)
  redis.call('HSET', key, LEASE_F.ended, why)
  if (rel(l.expires) or 0) > 0 then redis.call('PEXPIRE', key, TOMBSTONE_MS) end
  redis.call('ZREM', EXP, hex)
  redis.call('ZREM', IDS, hex)
end

-- Ends a live lease as expired (or revoked): frees its slots, hands back its probe.
local function reclaim(hex, key, l)
  free_slots(l)
  return_probe(l)
  count_lease(l.pressure, -1)
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
    if not found or l.ended then
      redis.call('ZREM', EXP, hex)
    elseif (rel(l.expires) or 0) <= 0 then
      reclaim(hex, key, l)
      out[#out + 1] = hex; out[#out + 1] = l.resource; out[#out + 1] = l.rule
    end
  end
  return out, more
end

local function gone_reason(l, found)
  if not found then return 'unknown_lease' end
  if l.ended == 'e' then return 'expired' end
  return 'already_released'
end
