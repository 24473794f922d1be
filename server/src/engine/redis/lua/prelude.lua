-- quotad's Redis store: the engine's state steps, one atomic call each, as one Redis Function library (FCALL).
-- The library is four files joined in this order when quotad is built (engine/redis/mod.rs):
--   prelude.lua  the call's keys, arguments and time, the protocol tables, the rule's specs as passed
--   policy.lua   the policy's primitives, each the twin of a Rust function it names: the bucket, the
--                breaker's window and transitions, the adaptive rate, the tightest levels
--   state.lua    how state is kept in Redis: keys, load and save, TTLs, leases and their expiry index
--   steps.lua    the steps (OPS.acq, OPS.rel, ...): the policy's order of checks over that state
-- The Rust side (engine/redis/) builds the keys and the rule's parameters and calls each step by name
-- (engine/redis/protocol.rs declares every step's fields); the conformance suite, a differential trace and the
-- twin tests hold this script and the Rust policy to identical decisions. The library's name carries a hash
-- of its text, so two quotad versions in a rolling upgrade each call their own; they share one state layout
-- (state.lua says how it may change).
--
-- Time. Stored instants are absolute Unix-epoch nanoseconds as decimal strings. Within one call every instant
-- is an offset in nanoseconds from `now`, so the arithmetic stays in exact doubles (integers below 2^53 ns,
-- 104 days) however far 1970 is. `now` is Redis's own TIME unless the caller passes one (tests on a fake clock).

-- A Redis Function library (Redis 7): the helpers below are built once, when the library loads, and each call
-- runs only its step. KEYS and A (ARGV) and the time are set at the start of every call.
local KEYS, A

local NOW_S, NOW_N, NOW_MS, NOW_SUB

-- The protocol, by name (engine/redis/protocol.rs declares it; the tables are generated from there):
-- KEY[step][name] and ARG[step][name] index KEYS and ARGV, OUT[step] lists a reply's fields in order.
__QUOTAD_PROTOCOL__

-- LEN[step] counts a step's named keys and arguments ({ keys, args }).
local ACQ_KEYS, ACQ_ARGS, LEVEL_ARGS = LEN.acq[1], LEN.acq[2], LEN.level[2]
local HIT_ARGS, COUNTER_ARGS = LEN.hit[2], LEN.counter[2]
local RATE_KEYS, RATE_ARGS = LEN.rate[1], LEN.rate[2]
local TAKE_KEYS, TAKE_ARGS = LEN.take[1], LEN.take[2]

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
  -- Milliseconds since the epoch, and the nanoseconds past them (windows are aligned on these).
  NOW_MS = NOW_S * 1000 + math.floor(NOW_N / 1000000); NOW_SUB = NOW_N % 1000000
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

-- A hash's fields by the names the script uses (READ), whichever layout stored them; where both layouts
-- stored a field, the one this library writes wins. Fields READ does not know keep their stored name.
local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do
    local k = flat[i]
    local name = READ[k] or k
    if WRITTEN[k] or h[name] == nil then h[name] = flat[i + 1] end
  end
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

-- Specs come from the config, so few distinct ones recur on every call: each is parsed once and kept (never
-- changed after parsing but to cache what is derived from it alone), the memo emptied when it holds more than
-- MEMO_MAX (a flood of rules costs a parse, never memory). One memo per kind of spec, keyed by the spec's own
-- string (no key is built per call).
local MEMO_MAX, memo, memo_n = 512, { r = {}, a = {}, b = {} }, 0

local function memoized(kind, s, parse)
  local hit = memo[kind][s]
  if hit ~= nil then return hit end
  if memo_n >= MEMO_MAX then memo = { r = {}, a = {}, b = {} }; memo_n = 0 end
  hit = parse(s)
  memo[kind][s] = hit; memo_n = memo_n + 1
  return hit
end

local function parse_rate(s)
  local p = split(s, ',')
  return { limit = tonumber(p[1]), period = tonumber(p[2]), burst = tonumber(p[3]),
           algorithm = p[4] or 'token_bucket' }
end

local function rate_spec(s)
  if s == '' or s == nil then return nil end
  return memoized('r', s, parse_rate)
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

local SLOTS = 10

local function slot_epoch(slot_len)
  if slot_len % 1000000000 == 0 then return math.floor(NOW_S / (slot_len / 1000000000)) end
  if 1000000000 % slot_len == 0 then
    return NOW_S * (1000000000 / slot_len) + math.floor(NOW_N / slot_len)
  end
  return math.floor((NOW_S * 1000000000 + NOW_N) / slot_len)
end

local transitions = {}

local function transition(from, to, reason) transitions[#transitions + 1] = from .. ':' .. to .. ':' .. reason end
