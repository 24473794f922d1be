-- The twin tests' step (server/tests/twins.rs), appended after prelude.lua and policy.lua in a library of
-- its own, loaded only by the tests: it runs a sequence of operations on one primitive of the Redis store's
-- policy and answers, per operation, its result and the state after it, as strings, for the Rust side to
-- compare with the Rust twin's. Arguments: the primitive, its parameters, then operations of three tokens.

-- Advances the call's clock by `ns`.
local function advance(ns)
  NOW_N = NOW_N + ns
  local carry = math.floor(NOW_N / 1000000000)
  NOW_S = NOW_S + carry
  NOW_N = NOW_N - carry * 1000000000
  NOW_MS = NOW_S * 1000 + math.floor(NOW_N / 1000000); NOW_SUB = NOW_N % 1000000
end

local function int(v) if v == nil or v == '' then return '' end return string.format('%d', v) end

-- ARGV: 'bucket', interval, burst, then (op, x, y): adv ns, chk permits, deb permits, bnd permits max_debt,
-- crd permits, sli permits want (a slice: -1 when `permits` are refused), giv permits, rem, ret interval
-- burst. Answers the op's result and the deficit after it.
local function twin_bucket(args)
  local bk = { kind = 'token_bucket', d = -FAR, i = tonumber(args[2]), b = tonumber(args[3]) }
  local r = {}
  for j = 4, #args, 3 do
    local op, x, y = args[j], tonumber(args[j + 1]), tonumber(args[j + 2])
    local v = ''
    if op == 'adv' then bk.d = math.max(bk.d - x, -FAR)
    elseif op == 'chk' then v = bucket_check(bk, x) or ''
    elseif op == 'deb' then bucket_debit(bk, x)
    elseif op == 'bnd' then v = bucket_debit_bounded(bk, x, y)
    elseif op == 'crd' then bucket_credit(bk, x)
    elseif op == 'sli' then v = bucket_check(bk, x) and -1 or slice_take({ bk }, x, y)
    elseif op == 'giv' then slice_give({ bk }, x, nil)
    elseif op == 'rem' then v = bucket_remaining(bk)
    elseif op == 'ret' then bucket_retune(bk, x, y) end
    r[#r + 1] = int(v); r[#r + 1] = int(math.max(bk.d, 0))
  end
  return r
end

-- ARGV: 'aimd', spec, then (op, x, _): adv ns, thr, grt. Answers the op's result and the factor after it.
local function twin_aimd(args)
  local spec = adaptive_spec(args[2])
  local p = { fa = 1, ld = nil, ls = -FAR, dirty = false }
  local r = {}
  for j = 3, #args, 3 do
    local op, x = args[j], tonumber(args[j + 1])
    local v = ''
    if op == 'adv' then
      p.ls = math.max(p.ls - x, -FAR)
      if p.ld then p.ld = p.ld - x end
    elseif op == 'thr' then v = adaptive_on_throttle(p, spec) and '1' or '0'
    elseif op == 'grt' then adaptive_on_grant(p, spec) end
    r[#r + 1] = v; r[#r + 1] = string.format('%.17g', pressure_factor(p, spec))
  end
  return r
end

-- ARGV: 'breaker', spec, start (ns since 1970), then (op, x, y): adv ns, adm, rec failed(0/1) probe(-1:
-- none), cnl epoch. Answers the op's result, the state after it and the transitions it made.
local function twin_breaker(args)
  local spec = breaker_spec(args[2])
  init_now(args[3])
  local b = breaker_new(spec)
  local r = {}
  for j = 4, #args, 3 do
    local op, x, y = args[j], tonumber(args[j + 1]), tonumber(args[j + 2])
    transitions = {}
    local v = ''
    if op == 'adv' then
      advance(x); b.s = b.s - x; b.u = b.u - x
    elseif op == 'adm' then
      local a, n = breaker_admit(b, spec)
      v = a .. ':' .. int(n)
    elseif op == 'rec' then
      local probe = nil
      if y >= 0 then probe = y end
      breaker_record(b, spec, x == 1, probe)
    elseif op == 'cnl' then breaker_cancel_probe(b, x) end
    r[#r + 1] = v; r[#r + 1] = breaker_state(b); r[#r + 1] = table.concat(transitions, ';')
  end
  return r
end

-- ARGV: 'settle', then (acquired, used or '', _). Answers what each settles.
local function twin_settle(args)
  local r = {}
  for j = 2, #args, 3 do
    local kind, n = settlement(tonumber(args[j]), num(args[j + 1]))
    r[#r + 1] = kind .. ':' .. int(n)
  end
  return r
end

-- ARGV: 'reporters', quiet, then (op, x, _): adv ns, rep identity ('' anonymous). Answers 1 when a report
-- starts a flood.
local function twin_reporters(args)
  local quiet, rep, r = tonumber(args[2]), {}, {}
  for j = 3, #args, 3 do
    local op, x = args[j], args[j + 1]
    local v = ''
    if op == 'adv' then
      for id, at in pairs(rep) do rep[id] = at - tonumber(x) end
    else
      v = reporters_admit(rep, x, quiet) and '1' or '0'
    end
    r[#r + 1] = v
  end
  return r
end

-- ARGV: 'window', algorithm, limit, period ns, start (ns since 1970), then (op, x, y): adv ns, chk permits,
-- deb permits, bnd permits max_debt, crd permits ago (taken `ago` ns before now), sli permits want, giv
-- permits ago, rem, rst, syn limit period
-- (a reload). Answers the op's result and the window's start (ms), count and previous count after it.
local function twin_window(args)
  init_now(args[5])
  local rate = { limit = tonumber(args[3]), period = tonumber(args[4]), burst = tonumber(args[3]),
                 algorithm = args[2] }
  local L = LIMITERS[rate.algorithm]
  local st = L.fresh(rate, 1.0)
  local r = {}
  for j = 6, #args, 3 do
    local op, x, y = args[j], tonumber(args[j + 1]), tonumber(args[j + 2])
    local v = ''
    if op == 'adv' then advance(x)
    elseif op == 'chk' then v = L.check(st, x) or ''
    elseif op == 'deb' then L.debit(st, x)
    elseif op == 'bnd' then v = L.debit_bounded(st, x, y)
    elseif op == 'crd' then L.credit(st, x, NOW_MS + math.floor((NOW_SUB - y) / 1000000))
    elseif op == 'sli' then v = L.check(st, x) and -1 or slice_take({ st }, x, y)
    elseif op == 'giv' then slice_give({ st }, x, NOW_MS + math.floor((NOW_SUB - y) / 1000000))
    elseif op == 'rem' then v = L.remaining(st)
    elseif op == 'rst' then v = L.reset_after(st)
    elseif op == 'syn' then
      rate = { limit = x, period = y, burst = x, algorithm = rate.algorithm }
      L.sync(st, rate, 1.0)
    end
    r[#r + 1] = int(v); r[#r + 1] = int(st.s); r[#r + 1] = int(st.c); r[#r + 1] = int(st.p)
  end
  return r
end

local TWINS = { bucket = twin_bucket, aimd = twin_aimd, breaker = twin_breaker, settle = twin_settle,
                reporters = twin_reporters, window = twin_window }
redis.register_function('quotad_twin', function(_, args)
  NOW_S, NOW_N = 0, 0
  return TWINS[args[1]](args)
end)
