-- quotad's Redis store: the engine's state steps, one atomic call each (ARGV[1] names the step), as one Redis
-- Function (FCALL); the Rust side (engine/redis/mod.rs) loads the library under a name that carries a hash of
-- this text, so two quotad versions in a rolling upgrade each call their own. They share one state layout,
-- so a change to it must stay readable by the previous version: add fields, never rename or reinterpret one,
-- and leave a field out only where the previous version reads it absent as empty (the lease's fields, below;
-- test redis_a_lease_keeps_the_fields_the_previous_version_reads). The Rust
-- side (engine/redis/) builds the keys and the rule's parameters; this script holds the same policy as the
-- in-memory store (engine/memory/), and the conformance suite and a differential trace hold the two to
-- identical decisions.
--
-- Time. Stored instants are absolute Unix-epoch nanoseconds as decimal strings. Within one call every instant
-- is an offset in nanoseconds from `now`, so the arithmetic stays in exact doubles (integers below 2^53 ns,
-- 104 days) however far 1970 is. `now` is Redis's own TIME unless the caller passes one (tests on a fake clock).

-- A Redis Function library (Redis 7): the helpers below are built once, when the library loads, and each call
-- runs only its step. KEYS and A (ARGV) and the time are set at the start of every call.
local KEYS, A
local NOW_S, NOW_N

-- The protocol, by name (engine/redis/protocol.rs declares it; the tables are generated from there):
-- KEY[step][name] and ARG[step][name] index KEYS and ARGV, OUT[step] lists a reply's fields in order.
__QUOTAD_PROTOCOL__
-- LEN[step] counts a step's named keys and arguments ({ keys, args }).
local ACQ_KEYS, ACQ_ARGS, LEVEL_ARGS = LEN.acq[1], LEN.acq[2], LEN.level[2]

-- A reply: `t`'s fields in the order OUT[step] declares ('' for a field `t` lacks).
local function out(step, t)
  local names, r = OUT[step], {}
  for i = 1, #names do
    local v = t[names[i]]
    if v == nil then v = '' end
    r[i] = v
  end
  return r
end

local function init_now(now)
  if now == '' then
    local t = redis.call('TIME')
    NOW_S = tonumber(t[1]); NOW_N = tonumber(t[2]) * 1000
  elseif #now <= 9 then
    NOW_S = 0; NOW_N = tonumber(now)
  else
    NOW_S = tonumber(string.sub(now, 1, -10)); NOW_N = tonumber(string.sub(now, -9))
  end
end
local FAR = 4503599627370496 -- 2^52 ns: "long ago" / "far ahead"
local TOMBSTONE_MS = 60000

local function rel(str)
  if str == nil or str == false or str == '' then return nil end
  local s, n
  if #str <= 9 then s = 0; n = tonumber(str) else
    s = tonumber(string.sub(str, 1, -10)); n = tonumber(string.sub(str, -9))
  end
  local ds = s - NOW_S
  if ds > 4503599 then return FAR end
  if ds < -4503599 then return -FAR end
  return ds * 1000000000 + (n - NOW_N)
end

local function abs(off)
  local total = NOW_N + off
  local carry = math.floor(total / 1000000000)
  local s = NOW_S + carry
  local n = total - carry * 1000000000
  if s <= 0 then return string.format('%d', math.max(n, 0)) end
  return string.format('%d%09d', s, n)
end

local function split(s, sep)
  local out, i = {}, 1
  if s == nil or s == false or s == '' then return out end
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + #sep
  end
end

local function num(s) if s == nil or s == false or s == '' then return nil end return tonumber(s) end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h, #flat > 0
end

-- Extends a key's life to at least `ms` from now: one call when it only grows (GT treats a key without a
-- TTL as immortal, so a fresh key gets its first TTL from the second call).
local function keep(key, ms)
  ms = math.ceil(ms)
  if ms < 1 then ms = 1 end
  if redis.call('PEXPIRE', key, ms, 'GT') == 0 and redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, ms)
  end
end

-- Exact ceil(a / b) for integers below 2^53.
local function ceil_div(a, b)
  local q = math.floor(a / b)
  while q * b < a do q = q + 1 end
  while q > 0 and (q - 1) * b >= a do q = q - 1 end
  return q
end

-- compiler-rt's __powidf2, which Rust's powi is, so both stores compute the same open period.
local function powi(a, b)
  local r = 1
  while true do
    if b % 2 == 1 then r = r * a end
    b = math.floor(b / 2)
    if b == 0 then break end
    a = a * a
  end
  return r
end

---------------------------------------------------------------------------------------------------------
-- Specs (built by the Rust side; floats printed so they round-trip exactly)

-- Specs come from the config, so few distinct ones recur on every call: each is parsed once and kept (never
-- changed after parsing), the memo emptied when it holds more than MEMO_MAX (a flood of rules costs a
-- parse, never memory).
local MEMO_MAX, memo, memo_n = 512, {}, 0
local function memoized(kind, s, parse)
  local key = kind .. s
  local hit = memo[key]
  if hit ~= nil then return hit end
  if memo_n >= MEMO_MAX then memo = {}; memo_n = 0 end
  hit = parse(s)
  memo[key] = hit; memo_n = memo_n + 1
  return hit
end

local function parse_rate(s)
  local p = split(s, ',')
  return { limit = tonumber(p[1]), period = tonumber(p[2]), burst = tonumber(p[3]) }
end
local function rate_spec(s)
  if s == '' or s == nil then return nil end
  return memoized('r', s, parse_rate)
end

local function interval(rate, factor)
  if not (factor > 0 and factor < 1) then
    return math.max(ceil_div(rate.period, math.max(rate.limit, 1)), 1)
  end
  local base = rate.period / rate.limit
  return math.max(math.ceil(base / factor), 1)
end

local function parse_adaptive(s)
  local p = split(s, ',')
  return { decrease = tonumber(p[1]), floor = tonumber(p[2]), cooldown = tonumber(p[3]),
           step = tonumber(p[4]), every = tonumber(p[5]) }
end
local function adaptive_spec(s)
  if s == '' or s == nil then return nil end
  return memoized('a', s, parse_adaptive)
end

local function parse_breaker(s)
  local p = split(s, ',')
  return { rate = tonumber(p[1]), min_calls = tonumber(p[2]), window = tonumber(p[3]),
           consecutive = tonumber(p[4]), open = tonumber(p[5]), backoff = tonumber(p[6]),
           max_open = tonumber(p[7]), probes = tonumber(p[8]), successes = tonumber(p[9]) }
end
local function breaker_spec(s)
  if s == '' or s == nil then return nil end
  return memoized('b', s, parse_breaker)
end

---------------------------------------------------------------------------------------------------------
-- Token bucket (GCRA), as engine/rate.rs: `d` is the deficit, tat - now (<= 0: full).

local function bucket_retune(bk, i, b)
  if i == bk.i and b == bk.b then return end
  local owed = math.max(bk.d, 0)
  local nd = owed * i / bk.i + (b - bk.b) * i
  if nd <= 0 then bk.d = -FAR else bk.d = math.ceil(nd) end
  bk.i = i; bk.b = b
end

local function bucket_check(bk, permits)
  local needed = math.max(bk.d, 0) + permits * bk.i
  local cap = bk.b * bk.i
  if needed <= cap then return nil end
  return needed - cap
end

local function bucket_debit(bk, permits) bk.d = math.max(bk.d, 0) + permits * bk.i end

local function bucket_debit_bounded(bk, permits, max_debt)
  local base = math.max(bk.d, 0)
  local floor = (bk.b + max_debt) * bk.i
  local room = math.floor(math.max(floor - base, 0) / bk.i)
  local taken = math.min(permits, room)
  bk.d = base + taken * bk.i
  return taken
end

local function bucket_credit(bk, permits)
  local d = bk.d - permits * bk.i
  if d <= 0 then bk.d = -FAR else bk.d = d end
end

local function bucket_remaining(bk)
  local def = math.max(bk.d, 0)
  local cap = bk.b * bk.i
  if def >= cap then return 0 end
  return math.floor((cap - def) / bk.i)
end

---------------------------------------------------------------------------------------------------------
-- A level: its bucket and its leases in flight (engine/memory/level.rs).

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

local function level_sync(cell, rate, factor)
  if rate == nil then cell.bucket = nil; return end
  local i = interval(rate, factor)
  if cell.bucket == nil then cell.bucket = { d = -FAR, i = i, b = rate.burst }
  else bucket_retune(cell.bucket, i, rate.burst) end
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
-- Circuit breaker (engine/breaker/state.rs and window.rs).

local SLOTS = 10

local function slot_epoch(slot_len)
  if slot_len % 1000000000 == 0 then return math.floor(NOW_S / (slot_len / 1000000000)) end
  if 1000000000 % slot_len == 0 then
    return NOW_S * (1000000000 / slot_len) + math.floor(NOW_N / slot_len)
  end
  return math.floor((NOW_S * 1000000000 + NOW_N) / slot_len)
end

local function breaker_new(spec)
  return { ph = 'c', s = 0, u = 0, pl = 0, sc = 0, c = 0, r = 0, e = 0, wl = spec.window, w = {}, dirty = false }
end

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

local function window_totals(b)
  local slot_len = math.max(math.floor(b.wl / SLOTS), 1)
  local current = slot_epoch(slot_len)
  local oldest = current - (SLOTS - 1)
  local calls, fails = 0, 0
  for i = 1, SLOTS do
    local s = b.w[i]
    if s and s.ep >= oldest and s.ep <= current and s.calls > 0 then
      calls = calls + s.calls; fails = fails + s.fails
    end
  end
  return calls, fails
end

local function window_record(b, failed)
  local slot_len = math.max(math.floor(b.wl / SLOTS), 1)
  local ep = slot_epoch(slot_len)
  local i = (ep % SLOTS) + 1
  local s = b.w[i]
  if s == nil or s.ep ~= ep then s = { ep = ep, calls = 0, fails = 0 }; b.w[i] = s end
  s.calls = s.calls + 1
  if failed then s.fails = s.fails + 1 end
end

local function breaker_state(b)
  if b.ph == 'c' then return 'closed' end
  if b.ph == 'o' and 0 < b.u then return 'open' end
  return 'half_open'
end

local transitions = {}
local function transition(from, to, reason) transitions[#transitions + 1] = from .. ':' .. to .. ':' .. reason end

local function breaker_tick(b, spec)
  if spec.window ~= b.wl then b.w = {}; b.wl = spec.window; b.dirty = true end
  if b.ph == 'o' and 0 >= b.u then
    b.ph = 'h'; b.pl = spec.probes; b.sc = 0; b.s = b.u; b.e = b.e + 1; b.dirty = true
    return 'open:half_open:open period over'
  end
  return nil
end

local function breaker_admit(b, spec)
  local t = breaker_tick(b, spec)
  if t then transitions[#transitions + 1] = t end
  if b.ph == 'c' then return 'allowed' end
  if b.ph == 'o' then return 'rejected', b.u end
  if b.pl > 0 then b.pl = b.pl - 1; b.dirty = true; return 'probe', b.e end
  return 'rejected', math.min(math.max(spec.open, 1), 1000000000)
end

local function breaker_cancel_probe(b, epoch)
  if b.ph == 'h' and epoch == b.e then b.pl = b.pl + 1; b.dirty = true end
end

local function breaker_open(b, duration)
  b.ph = 'o'; b.u = math.min(duration, FAR); b.s = 0; b.w = {}; b.c = 0; b.dirty = true
end

local function breaker_close(b)
  b.ph = 'c'; b.s = 0; b.w = {}; b.c = 0; b.r = 0; b.dirty = true
end

local function breaker_record(b, spec, failed, probe)
  local ticked = breaker_tick(b, spec)
  b.dirty = true
  window_record(b, failed)
  if failed then b.c = b.c + 1 else b.c = 0 end
  local changed = nil
  if b.ph == 'c' and failed then
    local calls, fails = window_totals(b)
    local by_rate = calls >= math.max(spec.min_calls, 1) and fails >= spec.rate * calls
    local in_a_row = spec.consecutive > 0 and b.c >= spec.consecutive
    if by_rate or in_a_row then
      local reason = 'consecutive failures'
      if by_rate then reason = 'failure rate reached' end
      breaker_open(b, spec.open)
      changed = 'closed:open:' .. reason
    end
  elseif b.ph == 'h' and failed then
    b.r = b.r + 1
    local factor = powi(math.max(spec.backoff, 1), math.min(b.r, 64))
    local open_for = math.min(spec.open * factor, spec.max_open)
    breaker_open(b, math.floor(open_for))
    changed = 'half_open:open:failure while half-open'
  elseif b.ph == 'h' then
    if probe == b.e then
      b.sc = b.sc + 1
      if b.sc >= math.max(spec.successes, 1) then
        breaker_close(b)
        changed = 'half_open:closed:probes succeeded'
      end
    end
  end
  local t = changed or ticked
  if t then transitions[#transitions + 1] = t end
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

local function pressure_factor(p, adaptive)
  if adaptive then return p.fa end
  return 1.0
end

local function adaptive_on_grant(p, spec)
  if p.fa >= 1 or 0 < p.ls + spec.every then return end
  p.fa = math.min(p.fa + spec.step, 1.0); p.ls = 0; p.dirty = true
end

local function adaptive_on_throttle(p, spec)
  if p.ld ~= nil and 0 < p.ld + spec.cooldown then return false end
  local lowered = math.max(p.fa * spec.decrease, spec.floor)
  p.ld = 0; p.ls = 0; p.dirty = true
  if lowered < p.fa then p.fa = lowered; return true end
  return false
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

---------------------------------------------------------------------------------------------------------
-- Figures of the tightest levels (engine/memory/acquire.rs Tightest).

local function tightest_new() return { remaining = nil, limit = 0, reset = 0, headroom = nil, inf = 0, max = 0 } end

local function observe(t, cell, max_in_flight)
  local bk = cell.bucket
  if bk then
    local r = bucket_remaining(bk)
    if t.remaining == nil or r < t.remaining then t.remaining = r; t.limit = bk.b; t.reset = math.max(bk.d, 0) end
  end
  if max_in_flight then
    local h = math.max(max_in_flight - cell.f, 0)
    if t.headroom == nil or h < t.headroom then t.headroom = h; t.inf = cell.f; t.max = max_in_flight end
  end
end

local function figures(t) return { t.remaining or 0, t.limit, t.reset, t.inf, t.max } end

-- An acquire's reply: `r`'s fields with the tightest levels' figures and the breaker's transitions (one
-- table built whole: growing it field by field costs Redis a rehash or two on every call).
local function decided(r, t)
  return out('acq', { status = r.status, reason = r.reason, lease = r.lease, expires = r.expires,
                      retry_after = r.retry_after, level = r.level, replayed = r.replayed,
                      remaining = t.remaining or 0, limit = t.limit, reset_after = t.reset, in_flight = t.inf,
                      max_in_flight = t.max, transitions = table.concat(transitions, ';') })
end

---------------------------------------------------------------------------------------------------------
-- Steps.

local OPS = {}

-- KEYS and ARGV: KEY.acq and ARG.acq, then each level's key and ARG.level (engine/redis/protocol.rs).
OPS.acq = function()
  local K, I = KEY.acq, ARG.acq
  local rkey, bkey, lkey, ikey = KEYS[K.resource], KEYS[K.breaker], KEYS[K.lease], KEYS[K.request_id]
  local permits, ttl, hex = tonumber(A[I.permits]), tonumber(A[I.ttl]), A[I.lease]
  local fingerprint, window = A[I.fingerprint], tonumber(A[I.window])
  local adaptive, bspec = adaptive_spec(A[I.adaptive]), breaker_spec(A[I.breaker])
  local conc_retry = tonumber(A[I.concurrency_retry_after])
  local held = A[I.held]
  local levels = {}
  for i = 1, tonumber(A[I.levels]) do
    local base, L = ACQ_ARGS + (i - 1) * LEVEL_ARGS, ARG.level
    local rate = A[base + L.rate]
    levels[i] = { key = KEYS[ACQ_KEYS + i], part = A[base + L.partition], rate_s = rate, rate = rate_spec(rate),
                  max = num(A[base + L.max_in_flight]), max_debt = A[base + L.max_debt] }
  end

  if fingerprint ~= '' then
    local seen = redis.call('GET', ikey)
    local s = split(seen or '', '|')
    if seen and (rel(s[9]) or 0) > 0 then
      if s[1] ~= fingerprint then return out('acq', { status = -1, reason = 'conflict' }) end
      return out('acq', { status = 1, lease = s[2], expires = s[3], remaining = tonumber(s[4]),
                          limit = tonumber(s[5]), reset_after = tonumber(s[6]), in_flight = tonumber(s[7]),
                          max_in_flight = tonumber(s[8]), replayed = 1, ttl = s[10] })
    end
  end
  reclaim_expired(8)

  local p = pressure_load(rkey)
  local factor = pressure_factor(p, adaptive)
  local function peek()
    local t = tightest_new()
    for _, lv in ipairs(levels) do
      local cell = level_load(lv.key)
      level_sync(cell, lv.rate, factor)
      observe(t, cell, lv.max)
    end
    return t
  end
  if p.pu > 0 then
    return decided({ status = 0, reason = 'paused', retry_after = p.pu, level = -1 }, peek())
  end

  local b, probe = nil, nil
  if bspec then
    b = breaker_load(bkey, bspec)
    local admission, x = breaker_admit(b, bspec)
    if admission == 'rejected' then
      breaker_save(bkey, b)
      return decided({ status = 0, reason = 'circuit_open', retry_after = x, level = -1 }, peek())
    elseif admission == 'probe' then
      probe = x
    end
  end

  local cells, denied = {}, nil
  for i, lv in ipairs(levels) do
    local cell = level_load(lv.key)
    level_sync(cell, lv.rate, factor)
    cells[i] = cell
    local function consider(reason, wait)
      if denied == nil or wait > denied.wait then denied = { reason = reason, wait = wait, level = i - 1 } end
    end
    if cell.bucket then
      local wait = bucket_check(cell.bucket, permits)
      if wait then consider('rate_limited', wait) end
    end
    if lv.max and cell.f >= lv.max then consider('concurrency_limited', math.max(conc_retry, 1000000)) end
  end
  local t = tightest_new()
  if denied then
    for i, lv in ipairs(levels) do
      observe(t, cells[i], lv.max)
      if cells[i].bucket then level_save(cells[i], 0) end
    end
    if b then
      if probe then breaker_cancel_probe(b, probe) end
      breaker_save(bkey, b)
    end
    return decided({ status = 0, reason = denied.reason, retry_after = denied.wait, level = denied.level }, t)
  end
  -- A grant: its (random) lease id must be new. Nothing this call changed is written yet but the reclaim of
  -- expired leases, which stands whoever calls, so the caller can retry with another id.
  if redis.call('EXISTS', lkey) == 1 then return out('acq', { status = -1, reason = 'collide' }) end

  local hold_ms = ttl / 1000000 + TOMBSTONE_MS
  local lv_out = {}
  for i, lv in ipairs(levels) do
    local cell = cells[i]
    local charged, slot = '0', '0'
    if cell.bucket then bucket_debit(cell.bucket, permits); charged = '1' end
    if lv.max then cell.f = cell.f + 1; slot = '1' end
    observe(t, cell, lv.max)
    level_save(cell, hold_ms)
    lv_out[#lv_out + 1] = table.concat({ lv.key, slot, charged, lv.rate_s, lv.max_debt }, '\31')
  end
  if b then breaker_save(bkey, b) end
  if adaptive then adaptive_on_grant(p, adaptive) end
  if p.dirty then
    p.n = p.n + 1
    pressure_save(p, 0)
    -- (It keeps the hash a day while leases are live; a longer lease needs longer.)
    if hold_ms > DAY_MS then keep(rkey, hold_ms) end
  else
    count_lease(rkey, 1, p.found, hold_ms)
  end

  local expires = abs(ttl)
  -- The client id and owner are written even when empty: a node of the previous version reads them as given.
  local rec = { 'res', A[I.resource], 'rule', A[I.rule], 'dt', A[I.default_ttl], 'mt', A[I.max_ttl],
                'cid', A[I.client_id], 'own', A[I.owner], 'p', A[I.permits], 'x', expires,
                'lv', table.concat(lv_out, '\30'), 'rk', rkey }
  local function opt(k, v) if v ~= '' then rec[#rec + 1] = k; rec[#rec + 1] = v end end
  opt('ad', A[I.adaptive]); opt('ds', held)
  if bspec then opt('bk', bkey); opt('bs', A[I.breaker]); opt('pr', probe or '') end
  redis.call('HSET', lkey, unpack(rec))
  redis.call('PEXPIRE', lkey, math.ceil(hold_ms))
  redis.call('ZADD', EXP, exp_score(ttl), hex)
  redis.call('ZADD', IDS, 0, hex)
  local f = figures(t)
  if fingerprint ~= '' then
    local rec = table.concat({ fingerprint, hex, expires, f[1], f[2], f[3], f[4], f[5], abs(window), ttl }, '|')
    redis.call('SET', ikey, rec, 'PX', math.max(math.ceil(window / 1000000), 1))
  end
  return decided({ status = 1, lease = hex, expires = expires, replayed = 0 }, t)
end

-- Charges up to `excess` more at every charged level, each at most its max debt below empty, all the same.
local function charge_excess(l, levels, excess)
  local factor = 1.0
  if l.ad ~= nil and l.ad ~= '' then factor = pressure_load(l.rk).fa end
  local taken, least = {}, excess
  for _, lv in ipairs(levels) do
    if lv.charged and lv.rate then
      local cell = level_load(lv.key)
      level_sync(cell, lv.rate, factor)
      local got = bucket_debit_bounded(cell.bucket, least, lv.max_debt)
      least = math.min(least, got)
      taken[#taken + 1] = { cell = cell, got = got }
    end
  end
  for _, x in ipairs(taken) do
    if x.got > least then bucket_credit(x.cell.bucket, x.got - least) end
    level_save(x.cell, 0)
  end
  if #taken == 0 then return 0 end
  return least
end

-- KEY.rel, ARG.rel (outcome: s f t u; used: '' for no settlement).
OPS.rel = function()
  local I = ARG.rel
  local key, hex, outcome = KEYS[KEY.rel.lease], A[I.lease], A[I.outcome]
  local used, caller = num(A[I.used]), A[I.caller]
  local l, found = lease_load(key)
  if not found or l.g then return out('rel', { status = 0, reason = gone_reason(l, found) }) end
  if l.own ~= caller then return out('rel', { status = -1, reason = 'not_owner' }) end
  if (rel(l.x) or 0) <= 0 then
    reclaim(hex, key, l)
    return out('rel', { status = 0, reason = 'expired', resource = l.res, rule = l.rule })
  end
  free_slots(l)
  local levels = lease_levels(l)
  local permits = tonumber(l.p)
  local refunded, charged = 0, 0
  if used and used < permits then
    refunded = permits - used
    for _, lv in ipairs(levels) do
      if lv.charged then
        local cell = level_load(lv.key)
        if cell.bucket then bucket_credit(cell.bucket, refunded); level_save(cell, 0) end
      end
    end
  elseif used and used > permits then
    charged = charge_excess(l, levels, used - permits)
  end
  local state = 'closed'
  local spec = breaker_spec(l.bs)
  if spec and l.bk ~= '' then
    local b = breaker_load(l.bk, spec)
    local probe = num(l.pr)
    if outcome == 's' then breaker_record(b, spec, false, probe)
    elseif (outcome == 'f' or outcome == 't') and l.fr ~= '1' then breaker_record(b, spec, true, probe)
    elseif outcome == 'u' and probe then breaker_cancel_probe(b, probe) end
    breaker_save(l.bk, b)
    state = breaker_state(b)
  end
  count_lease(l.rk, -1)
  tombstone(key, hex, 'r', l)
  return out('rel', { status = 1, refunded = refunded, charged = charged, state = state, resource = l.res,
                      rule = l.rule, transitions = table.concat(transitions, ';'), breaker = l.bk })
end

-- KEY.ren, ARG.ren (ttl: '' for the lease's default).
OPS.ren = function()
  local I = ARG.ren
  local key, hex, ttl, caller = KEYS[KEY.ren.lease], A[I.lease], num(A[I.ttl]), A[I.caller]
  local l, found = lease_load(key)
  if not found or l.g then return out('ren', { status = 0, reason = gone_reason(l, found) }) end
  if l.own ~= caller then return out('ren', { status = -1, reason = 'not_owner' }) end
  if (rel(l.x) or 0) <= 0 then return out('ren', { status = 0, reason = 'expired' }) end
  ttl = math.min(ttl or tonumber(l.dt), tonumber(l.mt))
  local expires = abs(ttl)
  redis.call('HSET', key, 'x', expires)
  local hold = ttl / 1000000 + TOMBSTONE_MS
  keep(key, hold)
  redis.call('ZADD', EXP, exp_score(ttl), hex)
  for _, lv in ipairs(lease_levels(l)) do
    if lv.slot then keep(lv.key, hold) end
  end
  keep(l.rk, hold)
  return out('ren', { status = 1, expires = expires, ttl = ttl })
end

-- KEY.rep, ARG.rep (kind: t e o; pause and lease: '' for none).
OPS.rep = function()
  local K, I = KEY.rep, ARG.rep
  local rkey, bkey, lkey = KEYS[K.resource], KEYS[K.breaker], KEYS[K.lease]
  local kind, pause, hex, caller, resource = A[I.kind], num(A[I.pause]), A[I.lease], A[I.caller], A[I.resource]
  local adaptive, bspec, quiet = adaptive_spec(A[I.adaptive]), breaker_spec(A[I.breaker]), tonumber(A[I.quiet])
  local lease_first, probe = nil, nil
  if hex ~= '' then
    local l, found = lease_load(lkey)
    if found and not l.g then
      if l.own ~= caller then return out('rep', { status = -1, reason = 'not_owner' }) end
      if l.res ~= resource then return out('rep', { status = -1, reason = 'other_resource' }) end
      lease_first = l.fr ~= '1'
      probe = num(l.pr)
      redis.call('HSET', lkey, 'fr', '1')
    end
  end
  local p = pressure_load(rkey)
  p.dirty = true
  p.qw = quiet
  local flood_start = true
  if caller ~= '' then
    for who, at in pairs(p.rep) do if at <= -quiet then p.rep[who] = nil end end
    if p.rep[caller] then flood_start = false end
    p.rep[caller] = 0
  end
  local decreased = false
  if adaptive and kind == 't' and flood_start then decreased = adaptive_on_throttle(p, adaptive) end
  local before = p.pu
  if pause and flood_start then p.pu = math.max(p.pu, pause) end
  local count = flood_start
  if lease_first ~= nil then count = lease_first end
  local state = 'closed'
  if bspec then
    local b = breaker_load(bkey, bspec)
    if count then breaker_record(b, bspec, true, probe) end
    breaker_save(bkey, b)
    state = breaker_state(b)
  end
  local paused = ''
  if p.pu > 0 then paused = abs(p.pu) end
  local before_s = ''
  if before > 0 then before_s = abs(before) end
  local factor = pressure_factor(p, adaptive)
  pressure_save(p, quiet)
  return out('rep', { status = 1, decreased = decreased and 1 or 0, paused_before = before_s,
                      paused_until = paused, factor = string.format('%.17g', factor), state = state,
                      transitions = table.concat(transitions, ';') })
end

local function snapshot(b, spec)
  local calls, fails = window_totals(b)
  local state = breaker_state(b)
  local half_open_at, probes, needed, since = '', 0, 0, b.s
  if b.ph == 'o' and 0 < b.u then half_open_at = abs(b.u)
  elseif b.ph == 'o' then probes = spec.probes; needed = math.max(spec.successes, 1); since = b.u
  elseif b.ph == 'h' then probes = b.pl; needed = math.max(math.max(spec.successes, 1) - b.sc, 0) end
  return { state = state, since = abs(since), calls = calls, failures = fails, consecutive = b.c,
           half_open_at = half_open_at, probes = probes, needed = needed }
end

-- KEY.cir, ARG.cir (breaker: the default spec when none is configured).
OPS.cir = function()
  local K, I = KEY.cir, ARG.cir
  local spec = breaker_spec(A[I.breaker])
  local r = snapshot(breaker_load(KEYS[K.breaker], spec), spec)
  local p = pressure_load(KEYS[K.resource])
  r.factor = string.format('%.17g', pressure_factor(p, A[I.adaptive] ~= ''))
  if p.pu > 0 then r.paused_until = abs(p.pu) end
  return out('cir', r)
end

-- KEY.rst, ARG.rst (breaker: '' for none). Answers the breaker's state before.
OPS.rst = function()
  local K = KEY.rst
  local before = 'closed'
  local spec = breaker_spec(A[ARG.rst.breaker])
  if spec then
    local b = breaker_load(KEYS[K.breaker], spec)
    before = breaker_state(b)
    breaker_close(b)
    breaker_save(KEYS[K.breaker], b)
  end
  if redis.call('EXISTS', KEYS[K.resource]) == 1 then
    redis.call('HSET', KEYS[K.resource], 'fa', '1', 'pu', '0')
    redis.call('HDEL', KEYS[K.resource], 'ld', 'ls')
  end
  return before
end

-- KEY.frc, ARG.frc. Answers the breaker's state before.
OPS.frc = function()
  local key, I = KEYS[KEY.frc.breaker], ARG.frc
  local b = breaker_load(key, breaker_spec(A[I.breaker]))
  local before = breaker_state(b)
  breaker_open(b, tonumber(A[I.duration]))
  breaker_save(key, b)
  return before
end

-- KEY.rvk, ARG.rvk. Answers 1 when a live lease was revoked.
OPS.rvk = function()
  local key = KEYS[KEY.rvk.lease]
  local l, found = lease_load(key)
  if not found or l.g then return 0 end
  reclaim(A[ARG.rvk.lease], key, l)
  return 1
end

-- KEYS: level keys. ARG.ref. Answers how many levels were refilled.
OPS.ref = function()
  local n = 0
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
      n = n + 1
      redis.call('HDEL', key, 't')
      if tonumber(redis.call('HGET', key, 'f') or '0') <= 0 then redis.call('DEL', key) end
    end
  end
  return n
end

-- KEYS: the expiry index of each shard swept. ARG.swp (prefix: ''), then each shard's prefix.
-- Answers which shards have more expired than the limit ('0'/'1' each, in order), then id, resource, rule
-- of each lease reclaimed.
OPS.swp = function()
  local all, more = { '' }, {}
  local limit = tonumber(A[ARG.swp.limit])
  for i = ARG.swp.limit + 1, #A do
    use_shard(A[i])
    local reclaimed, left = reclaim_expired(limit)
    more[#more + 1] = left and '1' or '0'
    for _, v in ipairs(reclaimed) do all[#all + 1] = v end
  end
  all[1] = table.concat(more)
  return all
end

-- KEY.lvl then each level's key; ARG.lvl then each level's rate spec.
-- Each level as it stands now, nothing written (an explanation): tokens ('' without a rate), the wait
-- before `permits` could be taken ('' when they can now), leases in flight.
OPS.lvl = function()
  local I = ARG.lvl
  local permits = tonumber(A[I.permits])
  local factor = pressure_factor(pressure_load(KEYS[KEY.lvl.resource]), A[I.adaptive] ~= '')
  local r = {}
  for i = 1, tonumber(A[I.levels]) do
    local cell = level_load(KEYS[KEY.lvl.resource + i])
    level_sync(cell, rate_spec(A[ARG.lvl.levels + i]), factor)
    local tokens, wait = '', ''
    if cell.bucket then
      tokens = bucket_remaining(cell.bucket)
      wait = bucket_check(cell.bucket, permits) or ''
    end
    r[#r + 1] = tokens; r[#r + 1] = wait; r[#r + 1] = cell.f
  end
  return r
end

-- KEY.use, ARG.use (rate: the resource-wide level's spec or '').
OPS.use = function()
  local K, I = KEY.use, ARG.use
  local p = pressure_load(KEYS[K.resource])
  local factor = pressure_factor(p, A[I.adaptive] ~= '')
  local cell = level_load(KEYS[K.level])
  local rate = rate_spec(A[I.rate])
  local tokens = ''
  if cell.bucket then tokens = bucket_remaining(cell.bucket) elseif rate then tokens = rate.burst end
  local state = 'closed'
  if redis.call('EXISTS', KEYS[K.breaker]) == 1 then
    local b = breaker_load(KEYS[K.breaker], { window = 0 })
    state = breaker_state(b)
  end
  local r = { tokens = tostring(tokens), in_flight = cell.f, leases = p.n, state = state,
              factor = string.format('%.17g', factor) }
  if p.pu > 0 then r.paused_until = abs(p.pu) end
  return out('use', r)
end

-- ARG.lst (after: a lease id, or '' from the start). Answers a row (OUT.lst) per live lease.
OPS.lst = function()
  local I = ARG.lst
  local from = '-'
  if A[I.after] ~= '' then from = '(' .. A[I.after] end
  local ids = redis.call('ZRANGEBYLEX', IDS, from, '+', 'LIMIT', 0, tonumber(A[I.limit]))
  local rows = {}
  for _, hex in ipairs(ids) do
    local l, found = lease_load(lease_key(hex))
    if found and not l.g then
      rows[#rows + 1] = out('lst', { lease = hex, resource = l.res, rule = l.rule, permits = l.p, expires = l.x,
                                     client_id = l.cid, owner = l.own, probe = l.pr, descriptors = l.ds })
    end
  end
  return rows
end

local function run(keys, args)
  KEYS = keys; A = args
  -- Every step's arguments start with its name, the time and the shard's prefix (protocol.rs).
  local head = ARG.rel
  init_now(A[head.now] or '')
  transitions = {}
  use_shard(A[head.prefix] or '')
  local op = OPS[A[head.step]]
  if op == nil then return redis.error_reply('quotad: unknown step ' .. tostring(A[head.step])) end
  return op()
end
redis.register_function('__QUOTAD_FUNCTION__', run)

-- The steps that end or extend what is already there: a Redis at its `maxmemory` (policy noeviction)
-- refuses every other step (a write that could grow it), but still lets leases be released, renewed,
-- revoked and swept, so a full Redis frees what it holds instead of keeping every slot taken until it
-- has room again. (They write little: a tombstone mark, a breaker record, a TTL.)
local ENDING = { rel = true, ren = true, rvk = true, swp = true }
redis.register_function{
  function_name = '__QUOTAD_FUNCTION___end',
  callback = function(keys, args)
    if not ENDING[args[1]] then
      return redis.error_reply('quotad: step ' .. tostring(args[1]) .. ' may grow memory: not in the _end function')
    end
    return run(keys, args)
  end,
  flags = { 'allow-oom' },
}
