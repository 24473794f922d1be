-- quotad's Redis store, part 4 of 4 (see prelude.lua): the steps. Each is one atomic call: the policy's order
-- of checks (engine/policy/) over the state state.lua keeps.

---------------------------------------------------------------------------------------------------------
-- Replies and steps.

-- An acquire's reply: `r`'s fields with the tightest levels' figures and the breaker's transitions (one
-- table built whole: growing it field by field costs Redis a rehash or two on every call).
local function decided(r, t)
  return out('acq', { status = r.status, reason = r.reason, lease = r.lease, expires = r.expires,
                      retry_after = r.retry_after, level = r.level, replayed = r.replayed, shadow = r.shadow,
                      reserve = r.reserve, bypassed = r.bypassed,
                      remaining = t.remaining or 0, limit = t.limit, reset_after = t.reset, in_flight = t.inf,
                      max_in_flight = t.max, transitions = table.concat(transitions, ';') })
end

-- A request_id's replay record (twin of engine/policy/replay.rs): `fingerprint|lease|expires|remaining|limit|
-- reset_after|in_flight|max_in_flight|window end|ttl|shadow|bypassed|held nothing (1)`, kept for the window.
-- The live record at `ikey` as its fields, or nil; 'conflict' when it was made with another fingerprint.
local function remembered(ikey, fingerprint)
  local seen = redis.call('GET', ikey)
  if not seen then return nil end
  local s = split(seen, '|')
  if (rel(s[9]) or 0) <= 0 then return nil end
  if s[1] ~= fingerprint then return 'conflict' end
  return s
end

-- Remembers a grant (`f`: its figures, as `figures` lists them) at `ikey` for `window` ns.
local function remember(ikey, fingerprint, hex, expires, f, window, ttl, shadow, bypassed, held_nothing)
  local rec = table.concat({ fingerprint, hex, expires, f[1], f[2], f[3], f[4], f[5], abs(window), ttl, shadow,
                             bypassed, held_nothing }, '|')
  redis.call('SET', ikey, rec, 'PX', math.max(math.ceil(window / 1000000), 1))
end

local OPS = {}

-- KEYS and ARGV: KEY.acq and ARG.acq, then each level's key and ARG.level (engine/redis/protocol.rs).
OPS.acq = function()
  local K, I = KEY.acq, ARG.acq
  local rkey, bkey, lkey, ikey = KEYS[K.resource], KEYS[K.breaker], KEYS[K.lease], KEYS[K.request_id]
  local permits, ttl, hex = tonumber(A[I.permits]), tonumber(A[I.ttl]), A[I.lease]
  local fingerprint, window = A[I.fingerprint], tonumber(A[I.window])
  local adaptive, bspec = adaptive_spec(A[I.adaptive]), breaker_spec(A[I.breaker])
  local conc_retry = tonumber(A[I.concurrency_retry_after])
  local held, bypass = A[I.held], A[I.bypass] == '1'
  local levels = {}
  for i = 1, tonumber(A[I.levels]) do
    local base, L = ACQ_ARGS + (i - 1) * LEVEL_ARGS, ARG.level
    local rate = A[base + L.rate]
    levels[i] = { key = KEYS[ACQ_KEYS + i], part = A[base + L.partition], rate_s = rate, rate = rate_spec(rate),
                  max = num(A[base + L.max_in_flight]), max_debt = A[base + L.max_debt],
                  shadow = A[base + L.shadow] == '1', rtok = num(A[base + L.reserve_tokens]) or 0,
                  rslot = num(A[base + L.reserve_slots]) or 0 }
  end

  if fingerprint ~= '' then
    local s = remembered(ikey, fingerprint)
    if s == 'conflict' then return out('acq', { status = -1, reason = 'conflict' }) end
    if s then
      return out('acq', { status = 1, lease = s[2], expires = s[3], remaining = tonumber(s[4]),
                          limit = tonumber(s[5]), reset_after = tonumber(s[6]), in_flight = tonumber(s[7]),
                          max_in_flight = tonumber(s[8]), replayed = 1, ttl = s[10], shadow = s[11],
                          bypassed = s[12] })
    end
  end
  -- Expired leases are reclaimed here only where one could be holding what this acquire needs: a slot at
  -- one of its levels, or its breaker's half-open probe (each reclaim costs Redis a call; the sweep takes the
  -- rest on its cadence).
  local needs_reclaim = bspec ~= nil
  for _, lv in ipairs(levels) do if lv.max then needs_reclaim = true end end
  if needs_reclaim then reclaim_expired(8) end

  local p = pressure_load(rkey)
  local factor = pressure_factor(p, adaptive)
  local function peek()
    local t = tightest_new()
    for _, lv in ipairs(levels) do
      local cell = level_load(lv.key, lv.rate and lv.rate.algorithm)
      level_sync(cell, lv.rate, factor)
      observe(t, cell, lv.max)
    end
    return t
  end
  -- A bypassed acquire is never paused nor refused by its breaker (its outcome still counts there).
  if p.pu > 0 and not bypass then
    return decided({ status = 0, reason = 'paused', retry_after = p.pu, level = -1 }, peek())
  end

  local b, probe = nil, nil
  if bspec then
    b = breaker_load(bkey, bspec)
    local admission, x = 'allowed', nil
    if not bypass then admission, x = breaker_admit(b, bspec) end
    if admission == 'rejected' then
      breaker_save(bkey, b)
      return decided({ status = 0, reason = 'circuit_open', retry_after = x, level = -1 }, peek())
    elseif admission == 'probe' then
      probe = x
    end
  end

  -- Twin of engine/policy/levels.rs judge: every level checked, a shadow level never denying; a bypassed
  -- acquire checks none (take_slots).
  local cells, denied, shadow = {}, nil, nil
  for i, lv in ipairs(levels) do
    local cell = level_load(lv.key, lv.rate and lv.rate.algorithm)
    level_sync(cell, lv.rate, factor)
    cells[i] = cell
    local reason, wait = nil, nil
    if not bypass then reason, wait = level_denial(cell, lv.max, permits, conc_retry, lv.rtok, lv.rslot) end
    if reason and lv.shadow then
      lv.shadow_denied = true
      if shadow == nil then shadow = i - 1 end
    elseif reason and (denied == nil or wait > denied.wait) then
      local reserve = (lv.rtok > 0 or lv.rslot > 0) and level_denial(cell, lv.max, permits, conc_retry, 0, 0) == nil
      denied = { reason = reason, wait = wait, level = i - 1, reserve = reserve and 1 or 0 }
    end
  end
  local t = tightest_new()
  if denied then
    for i, lv in ipairs(levels) do
      if not lv.shadow then observe(t, cells[i], lv.max) end
      if cells[i].lim then level_save(cells[i], 0) end
    end
    if b then
      if probe then breaker_cancel_probe(b, probe) end
      breaker_save(bkey, b)
    end
    return decided({ status = 0, reason = denied.reason, retry_after = denied.wait, level = denied.level,
                     reserve = denied.reserve }, t)
  end
  -- A grant: its (random) lease id must be new. Nothing this call changed is written yet but the reclaim of
  -- expired leases, which stands whoever calls, so the caller can retry with another id.
  if redis.call('EXISTS', lkey) == 1 then return out('acq', { status = -1, reason = 'collide' }) end

  local hold_ms = ttl / 1000000 + TOMBSTONE_MS
  local lv_out, windowed = {}, false
  for i, lv in ipairs(levels) do
    local cell = cells[i]
    local charged, slot = '0', '0'
    if not lv.shadow_denied then
      if cell.lim and not bypass then LIMITERS[cell.lim.kind].debit(cell.lim, permits); charged = '1' end
      if lv.max then cell.f = cell.f + 1; slot = '1' end
    end
    if not lv.shadow then observe(t, cell, lv.max) end
    if cell.lim and cell.lim.kind ~= 'token_bucket' then windowed = true end
    level_save(cell, hold_ms)
    lv_out[#lv_out + 1] = table.concat({ lv.key, slot, charged, lv.rate_s, lv.max_debt }, '\31')
  end
  if b then breaker_save(bkey, b) end
  if adaptive and not bypass then adaptive_on_grant(p, adaptive) end
  if p.dirty then
    p.n = p.n + 1
    pressure_save(p, 0)
    -- (It keeps the hash a day while leases are live; a longer lease needs longer.)
    if hold_ms > DAY_MS then keep(rkey, hold_ms) end
  else
    count_lease(rkey, 1, p, hold_ms)
  end

  local expires = abs(ttl)
  -- The client id and owner are written even when empty: a node of the previous version reads them as given.
  local F = LEASE_F
  local rec = { F.resource, A[I.resource], F.rule, A[I.rule], F.default_ttl, A[I.default_ttl], F.max_ttl,
                A[I.max_ttl], F.client_id, A[I.client_id], F.owner, A[I.owner], F.permits, A[I.permits],
                F.expires, expires, F.levels, table.concat(lv_out, '\30'), F.pressure, rkey }
  local function opt(k, v) if v ~= '' then rec[#rec + 1] = k; rec[#rec + 1] = v end end
  -- When it was granted: only a window's refund needs it.
  if windowed then opt(F.granted, string.format('%d', NOW_MS)) end
  opt(F.adaptive, A[I.adaptive]); opt(F.descriptors, held); opt(F.final, A[I.final_grant])
  if bspec then opt(F.breaker, bkey); opt(F.breaker_spec, A[I.breaker]); opt(F.probe, probe or '') end
  redis.call('HSET', lkey, unpack(rec))
  redis.call('PEXPIRE', lkey, math.ceil(hold_ms))
  redis.call('ZADD', EXP, exp_score(ttl), hex)
  redis.call('ZADD', IDS, 0, hex)
  local f = figures(t)
  if fingerprint ~= '' then
    remember(ikey, fingerprint, hex, expires, f, window, ttl, shadow or '', bypass and 1 or '', '')
  end
  return decided({ status = 1, lease = hex, expires = expires, replayed = 0, shadow = shadow,
                   bypassed = bypass and 1 or '' }, t)
end

-- Twin of engine/policy/release.rs charge_excess (with charge_level and refund_level): up to `excess` more at
-- every charged level, each at most its max debt below empty, all the same.
local function charge_excess(l, levels, excess)
  local factor = 1.0
  if l.adaptive ~= nil and l.adaptive ~= '' then factor = pressure_load(l.pressure).fa end
  local taken, least = {}, excess
  for _, lv in ipairs(levels) do
    if lv.charged and lv.rate then
      local cell = level_load(lv.key)
      level_sync(cell, lv.rate, factor)
      local got = LIMITERS[cell.lim.kind].debit_bounded(cell.lim, least, lv.max_debt)
      least = math.min(least, got)
      taken[#taken + 1] = { cell = cell, got = got }
    end
  end
  for _, x in ipairs(taken) do
    if x.got > least then LIMITERS[x.cell.lim.kind].credit(x.cell.lim, x.got - least, NOW_MS) end
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
  if not found or l.ended then return out('rel', { status = 0, reason = gone_reason(l, found) }) end
  if l.owner ~= caller then return out('rel', { status = -1, reason = 'not_owner' }) end
  if (rel(l.expires) or 0) <= 0 then
    reclaim(hex, key, l)
    return out('rel', { status = 0, reason = 'expired', resource = l.resource, rule = l.rule })
  end
  free_slots(l)
  local levels = lease_levels(l)
  local permits = tonumber(l.permits)
  local refunded, charged = 0, 0
  -- A grant under `settlement = false` is final.
  if l.final == '1' then used = nil end
  local settle, n = settlement(permits, used)
  if settle == 'refund' then
    refunded = n
    for _, lv in ipairs(levels) do
      if lv.charged then
        local cell = level_load(lv.key)
        if cell.lim then
          LIMITERS[cell.lim.kind].credit(cell.lim, refunded, num(l.granted))
          level_save(cell, 0)
        end
      end
    end
  elseif settle == 'charge' then
    charged = charge_excess(l, levels, n)
  end
  local state = 'closed'
  local spec = breaker_spec(l.breaker_spec)
  if spec and l.breaker ~= '' then
    local b = breaker_load(l.breaker, spec)
    local probe = num(l.probe)
    if outcome == 's' then breaker_record(b, spec, false, probe)
    elseif (outcome == 'f' or outcome == 't') and l.failure_reported ~= '1' then breaker_record(b, spec, true, probe)
    elseif outcome == 'u' and probe then breaker_cancel_probe(b, probe) end
    breaker_save(l.breaker, b)
    state = breaker_state(b)
  end
  count_lease(l.pressure, -1)
  tombstone(key, hex, 'r', l)
  return out('rel', { status = 1, refunded = refunded, charged = charged, state = state, resource = l.resource,
                      rule = l.rule, transitions = table.concat(transitions, ';'), breaker = l.breaker })
end

-- KEY.ren, ARG.ren (ttl: '' for the lease's default).
OPS.ren = function()
  local I = ARG.ren
  local key, hex, ttl, caller = KEYS[KEY.ren.lease], A[I.lease], num(A[I.ttl]), A[I.caller]
  local l, found = lease_load(key)
  if not found or l.ended then return out('ren', { status = 0, reason = gone_reason(l, found) }) end
  if l.owner ~= caller then return out('ren', { status = -1, reason = 'not_owner' }) end
  if (rel(l.expires) or 0) <= 0 then return out('ren', { status = 0, reason = 'expired' }) end
  ttl = math.min(ttl or tonumber(l.default_ttl), tonumber(l.max_ttl))
  local expires = abs(ttl)
  redis.call('HSET', key, LEASE_F.expires, expires)
  local hold = ttl / 1000000 + TOMBSTONE_MS
  keep(key, hold)
  redis.call('ZADD', EXP, exp_score(ttl), hex)
  for _, lv in ipairs(lease_levels(l)) do
    if lv.slot then keep(lv.key, hold) end
  end
  keep(l.pressure, hold)
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
    if found and not l.ended then
      -- The resource first, as every store checks it (engine/policy/report.rs lease_reported).
      if l.resource ~= resource then return out('rep', { status = -1, reason = 'other_resource' }) end
      if l.owner ~= caller then return out('rep', { status = -1, reason = 'not_owner' }) end
      lease_first = l.failure_reported ~= '1'
      probe = num(l.probe)
      redis.call('HSET', lkey, LEASE_F.failure_reported, '1')
    end
  end
  local p = pressure_load(rkey)
  p.dirty = true
  p.qw = quiet
  local flood_start = reporters_admit(p.rep, caller, quiet)
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
    local p = pressure_load(KEYS[K.resource])
    p.fa, p.pu, p.ld, p.ls, p.dirty = 1, -FAR, nil, -FAR, true
    pressure_save(p, 0)
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
  if not found or l.ended then return 0 end
  reclaim(A[ARG.rvk.lease], key, l)
  return 1
end

-- KEYS: level keys. ARG.ref. Answers how many levels were refilled.
OPS.ref = function()
  local n = 0
  for _, key in ipairs(KEYS) do
    local cell = level_load(key)
    if cell.found then
      n = n + 1
      cell.lim = nil
      level_save(cell, 0)
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

-- KEY.lvl then each level's key. Each level as it is stored, nothing written (an explanation, which runs the
-- policy over it in Rust): OUT.lvl (the factor on the rule's rates), then an OUT.level row per level.
OPS.lvl = function()
  local I = ARG.lvl
  local factor = pressure_factor(pressure_load(KEYS[KEY.lvl.resource]), A[I.adaptive] ~= '')
  local r = out('lvl', { factor = string.format('%.17g', factor) })
  for i = 1, tonumber(A[I.levels]) do
    local cell = level_load(KEYS[KEY.lvl.resource + i])
    local t = { in_flight = cell.f }
    local st = cell.lim
    if st and st.kind == 'token_bucket' then
      t.algorithm = st.kind; t.deficit = string.format('%d', math.max(st.d, 0))
      t.interval = string.format('%d', st.i); t.burst = string.format('%d', st.b)
    elseif st then
      t.algorithm = st.kind; t.window_start = string.format('%d', st.s); t.count = string.format('%d', st.c)
      t.previous = string.format('%d', st.p); t.period = string.format('%d', st.w)
    end
    r[#r + 1] = out('level', t)
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
  level_sync(cell, rate, factor)
  if cell.lim then tokens = LIMITERS[cell.lim.kind].remaining(cell.lim) end
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
    if found and not l.ended then
      rows[#rows + 1] = out('lst', { lease = hex, resource = l.resource, rule = l.rule, permits = l.permits, expires = l.expires,
                                     client_id = l.client_id, owner = l.owner, probe = l.probe, descriptors = l.descriptors })
    end
  end
  return rows
end

-- KEYS: each distinct counter's level key. ARG.hit, then ARG.counter per counter. A gateway's request: every
-- counter checked, all debited or none (a shadow counter whenever it has room), no lease kept. Twin of
-- judge_hits and request_over in engine/policy/hits.rs.
OPS.hit = function()
  local C, n = ARG.counter, tonumber(A[ARG.hit.counters])
  local cells, pending, hits = {}, {}, {}
  local quotas, quotas_over, denied = 0, 0, false
  for i = 1, n do
    local base = HIT_ARGS + (i - 1) * COUNTER_ARGS
    local h = { c = tonumber(A[base + C.cell]), rate = rate_spec(A[base + C.rate]), permits = tonumber(A[base + C.permits]),
                mode = A[base + C.mode], negative = A[base + C.negative] == '1', over = false }
    local cell = cells[h.c]
    if cell == nil then
      cell = level_load(KEYS[h.c], h.rate and h.rate.algorithm); cells[h.c] = cell; pending[h.c] = 0
    end
    level_sync(cell, h.rate, 1)
    if not h.negative and cell.lim then
      h.over = LIMITERS[cell.lim.kind].check(cell.lim, pending[h.c] + h.permits) ~= nil
    end
    if not h.over and not h.negative then pending[h.c] = pending[h.c] + h.permits end
    if h.mode == 'enforced' and h.over then denied = true end
    if h.mode == 'quota' then
      quotas = quotas + 1
      if h.over then quotas_over = quotas_over + 1 end
    end
    hits[i] = h
  end
  if quotas > 0 and quotas == quotas_over then denied = true end
  local rows = { out('hit', { over = denied and 1 or 0 }) }
  for i, h in ipairs(hits) do
    local cell = cells[h.c]
    local st = cell.lim
    if st == nil then
      rows[i + 1] = out('counter', { over = 0, remaining = 0, limit = 0, reset_after = 0 })
    else
      local L = LIMITERS[st.kind]
      if h.negative then L.credit(st, h.permits, NOW_MS)
      elseif not h.over and (h.mode == 'shadow' or not denied) then L.debit(st, h.permits) end
      local reset = L.reset_after(st)
      if st.kind ~= 'token_bucket' then reset = st.w - window_elapsed(st.w) end
      local remaining = 0
      if not h.over then remaining = L.remaining(st) end
      -- Plain numbers (integers below 2^53: Redis replies them as integers).
      rows[i + 1] = out('counter', { over = h.over and 1 or 0, remaining = remaining, limit = L.capacity(st),
                                     reset_after = reset })
    end
  end
  for _, cell in pairs(cells) do level_save(cell, 0) end
  return rows
end

-- An acquire that holds nothing: its reply (OUT.rate, in its order; plain numbers), with the tightest
-- level's figures.
local function rated(status, reason, wait, level, remaining, limit, reset)
  return { status, reason, wait, level, remaining, limit, reset }
end

local function rated_by(status, reason, wait, level, t)
  return rated(status, reason or '', wait or 0, level or 0, t.remaining or 0, t.limit, t.reset)
end

-- A bucket's TTL, pushed by the step below only when it no longer covers the moment the bucket is full again
-- and a second (as level_save sets it), and then a minute further: a grant costs Redis one write, not two.
local KEEP_AHEAD_MS = 60000

-- The one-bucket case of OPS.rate, the common one: a token bucket stored in this layout with the rule's
-- interval and burst. It reads the bucket's fields and the pause in two calls and writes its TAT alone (the
-- TTL once a minute), allocating little (Redis's Lua collects garbage as it goes: every table and string
-- costs twice). Its figures are Tightest::observe's for one bucket. nil when the bucket is not such (absent,
-- another layout or algorithm, retimed): the general path decides then, the same way.
local function rate_one_bucket(lkey, rkey, rate, permits)
  if rate == nil or rate.algorithm ~= 'token_bucket' then return nil end
  local F = LEVEL_F
  local v = redis.call('HMGET', lkey, F.tat, F.interval, F.burst, F.kept)
  -- The interval and burst as bucket_save writes them, made once per spec (the spec is memoized).
  if rate.stored_i == nil then
    rate.i1 = interval(rate, 1)
    rate.stored_i = string.format('%d', rate.i1); rate.stored_b = string.format('%d', rate.burst)
  end
  if v[2] ~= rate.stored_i or v[3] ~= rate.stored_b then return nil end
  local bk = { kind = 'token_bucket', d = rel(v[1]) or -FAR, i = rate.i1, b = rate.burst }
  local pu = redis.call('HMGET', rkey, PRESSURE_F.paused_until, PRESSURE_O.paused_until)
  pu = rel(pu[1] or pu[2]) or -FAR
  local wait = nil
  if pu > 0 then wait = pu else wait = bucket_check(bk, permits) end
  if wait then
    return rated(0, pu > 0 and 'paused' or 'rate_limited', wait, pu > 0 and -1 or 0, bucket_remaining(bk), bk.b,
                 math.max(bk.d, 0))
  end
  bucket_debit(bk, permits)
  local need = NOW_MS + math.ceil(bk.d / 1000000) + 1000
  if need > tonumber(v[4] or '0') then
    local kept = need + KEEP_AHEAD_MS
    redis.call('HSET', lkey, F.tat, abs(bk.d), F.kept, string.format('%d', kept))
    redis.call('PEXPIRE', lkey, kept - NOW_MS, 'GT')
  else
    redis.call('HSET', lkey, F.tat, abs(bk.d))
  end
  return rated(1, '', 0, 0, bucket_remaining(bk), bk.b, bk.d)
end

local rate_decide

-- KEY.rate and ARG.rate, then each level's key and rate (and the request_id's key after the levels'). An acquire that holds nothing (engine/plan.rs
-- holds_nothing: rate levels only, no breaker, adaptive rate, slot, replay or settlement): twin of
-- engine/policy/acquire.rs decide for such a plan, which stores no lease. The pause denies first, then every
-- level all or none; only the levels are written. Replies OUT.rate.
OPS.rate = function()
  local replay = A[ARG.rate.replay]
  if replay == '' then return rate_decide() end
  local q = split(replay, '|')
  local fingerprint, hex, ttl, window = q[1], q[2], tonumber(q[3]), tonumber(q[4])
  -- A request_id: a live record replays its grant, else the grant made now is remembered (held nothing).
  local ikey = KEYS[RATE_KEYS + tonumber(A[ARG.rate.levels]) + 1]
  local s = remembered(ikey, fingerprint)
  if s == 'conflict' then return { -1, 'conflict' } end
  if s then
    return { 1, '', 0, 0, tonumber(s[4]), tonumber(s[5]), tonumber(s[6]), s[2], s[3], s[10],
             s[13] == '1' and 0 or 1 }
  end
  local r = rate_decide()
  if r[1] == 1 then
    remember(ikey, fingerprint, hex, abs(ttl), { r[5], r[6], r[7], 0, 0 }, window, ttl, '', '', '1')
  end
  return r
end

-- The decision of OPS.rate.
rate_decide = function()
  local n, permits = tonumber(A[ARG.rate.levels]), tonumber(A[ARG.rate.permits])
  local rkey = KEYS[KEY.rate.resource]
  if n == 1 then
    local r = rate_one_bucket(KEYS[RATE_KEYS + 1], rkey, rate_spec(A[RATE_ARGS + 1]), permits)
    if r then return r end
  end
  local cells = {}
  for i = 1, n do
    local rate = rate_spec(A[RATE_ARGS + i])
    local cell = level_load(KEYS[RATE_KEYS + i], rate and rate.algorithm)
    level_sync(cell, rate, 1)
    cells[i] = cell
  end
  local t = tightest_new()
  local pu = redis.call('HMGET', rkey, PRESSURE_F.paused_until, PRESSURE_O.paused_until)
  pu = rel(pu[1] or pu[2]) or -FAR
  if pu > 0 then
    for _, cell in ipairs(cells) do observe(t, cell, nil) end
    return rated_by(0, 'paused', pu, -1, t)
  end
  local denied = nil
  for i, cell in ipairs(cells) do
    local reason, wait = level_denial(cell, nil, permits, 0, 0, 0)
    if reason and (denied == nil or wait > denied.wait) then
      denied = { reason = reason, wait = wait, level = i - 1 }
    end
  end
  for _, cell in ipairs(cells) do
    if cell.lim and not denied then LIMITERS[cell.lim.kind].debit(cell.lim, permits) end
    observe(t, cell, nil)
    if cell.lim then level_save(cell, 0) end
  end
  if denied then return rated_by(0, denied.reason, denied.wait, denied.level, t) end
  return rated_by(1, nil, 0, 0, t)
end

-- KEY.take and ARG.take, then each level's key and rate. A node's slice of its levels' permits
-- (engine/redis/share.rs; the plan holds nothing, as OPS.rate's): first `give` permits of its last slice go
-- back (slice_give), then `permits` are decided as rate_decide does (the pause first, then every level all
-- or none) and, when granted, up to `want` more are taken with them (slice_take). Replies OUT.take.
OPS.take = function()
  local n, permits = tonumber(A[ARG.take.levels]), tonumber(A[ARG.take.permits])
  local want, give = tonumber(A[ARG.take.want]), tonumber(A[ARG.take.give])
  local cells, lims = {}, {}
  for i = 1, n do
    local rate = rate_spec(A[TAKE_ARGS + i])
    local cell = level_load(KEYS[TAKE_KEYS + i], rate and rate.algorithm)
    level_sync(cell, rate, 1)
    cells[i] = cell
    if cell.lim then lims[#lims + 1] = cell.lim end
  end
  if give > 0 then slice_give(lims, give, num(A[ARG.take.given_at])) end
  local pu = redis.call('HMGET', KEYS[KEY.take.resource], PRESSURE_F.paused_until, PRESSURE_O.paused_until)
  pu = rel(pu[1] or pu[2]) or -FAR
  local denied = nil
  if pu > 0 then denied = { reason = 'paused', wait = pu, level = -1 } end
  for i, cell in ipairs(cells) do
    local reason, wait = level_denial(cell, nil, permits, 0, 0, 0)
    if reason and denied == nil or (reason and wait > denied.wait and denied.level >= 0) then
      denied = { reason = reason, wait = wait, level = i - 1 }
    end
  end
  local taken, refill = 0, 0
  if not denied and permits > 0 then taken = slice_take(lims, permits, want) end
  if denied then
    -- How long until the whole slice could be taken: a node denied waits that long before asking again,
    -- and loses nothing by it while the levels hold what refills meanwhile.
    for _, st in ipairs(lims) do
      refill = math.max(refill, LIMITERS[st.kind].check(st, math.min(permits + want, LIMITERS[st.kind].capacity(st))) or 0)
    end
  end
  local t = tightest_new()
  for _, cell in ipairs(cells) do
    observe(t, cell, nil)
    if cell.lim then level_save(cell, 0) end
  end
  local r = { status = 1, remaining = t.remaining or 0, limit = t.limit, reset_after = t.reset,
              taken = taken, at = NOW_MS, level = 0, retry_after = 0 }
  if denied then
    r.status = 0; r.reason = denied.reason; r.retry_after = denied.wait; r.level = denied.level
    r.refill_after = math.max(refill, denied.wait)
  end
  return out('take', r)
end

local function run(keys, args)
  KEYS = keys; A = args
  -- Every step's arguments start with its name, the time and the shard's prefix (protocol.rs).
  local head = ARG.rel
  init_now(A[head.now] or '')
  -- (Kept from the last call when nothing was added, as the shard's names are when it is the same shard:
  -- a table or string made per call costs Redis its making and its collection.)
  if #transitions > 0 then transitions = {} end
  local prefix = A[head.prefix] or ''
  if prefix ~= PREFIX then use_shard(prefix) end
  local op = OPS[A[head.step]]
  if op == nil then return redis.error_reply('quotad: unknown step ' .. tostring(A[head.step])) end
  return op()
end

-- Several calls of one shard in one (engine/redis/batch.rs): ARGV `batch`, their count n, each one's key and
-- argument counts (2n numbers), then their arguments in order; KEYS theirs in order. Each runs on its own, in
-- order, as if called alone (its own time, shard and step), and is answered in its place: one that fails
-- (an error raised, or a step `allowed` refuses) answers its error, and the others go on.
local function run_batch(keys, args, allowed)
  local n, out, ki, ai = tonumber(args[2]), {}, 1, 3 + 2 * tonumber(args[2])
  for c = 1, n do
    local nk, na = tonumber(args[1 + 2 * c]), tonumber(args[2 + 2 * c])
    local k, a = {}, {}
    for i = 1, nk do k[i] = keys[ki]; ki = ki + 1 end
    for i = 1, na do a[i] = args[ai]; ai = ai + 1 end
    if allowed and not allowed[a[1]] then
      out[c] = redis.error_reply('quotad: step ' .. tostring(a[1]) .. ' may grow memory: not in the _end function')
    else
      local ok, r = pcall(run, k, a)
      if ok then out[c] = r
      elseif type(r) == 'table' and r.err then out[c] = r
      else out[c] = redis.error_reply(tostring(r)) end
    end
  end
  return out
end

redis.register_function('__QUOTAD_FUNCTION__', function(keys, args)
  if args[1] == 'batch' then return run_batch(keys, args, nil) end
  return run(keys, args)
end)

-- The steps that end or extend what is already there: a Redis at its `maxmemory` (policy noeviction)
-- refuses every other step (a write that could grow it), but still lets leases be released, renewed,
-- revoked and swept, so a full Redis frees what it holds instead of keeping every slot taken until it
-- has room again. (They write little: a tombstone mark, a breaker record, a TTL.)
local ENDING = { rel = true, ren = true, rvk = true, swp = true }

redis.register_function{
  function_name = '__QUOTAD_FUNCTION___end',
  callback = function(keys, args)
    if args[1] == 'batch' then return run_batch(keys, args, ENDING) end
    if not ENDING[args[1]] then
      return redis.error_reply('quotad: step ' .. tostring(args[1]) .. ' may grow memory: not in the _end function')
    end
    return run(keys, args)
  end,
  flags = { 'allow-oom' },
}
