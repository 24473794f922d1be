-- quotad's Redis store, part 2 of 4 (see prelude.lua): the policy's primitives. Each function is the twin of
-- the Rust function its comment names and must answer the same on the same state; the twin tests
-- (server/tests/twins.rs) run both on random states. Nothing here reads or writes Redis.

---------------------------------------------------------------------------------------------------------
-- Arithmetic both sides do alike

-- Exact ceil(a / b) for integers below 2^53.
-- Twin of u64::div_ceil (engine/rate.rs RateSpec::new).
local function ceil_div(a, b)
  local q = math.floor(a / b)
  while q * b < a do q = q + 1 end
  while q > 0 and (q - 1) * b >= a do q = q - 1 end
  return q
end

-- Exact a * b / c rounded up (`up`) or down, for non-negative integers below 2^53 (c > 0) whose quotient is
-- below 2^53, as Rust computes it in 128 bits: a product past 2^53 is carried in 24-bit limbs and divided
-- bit by bit (a double would round it).
-- Twin of u128 multiplication and div_ceil (engine/policy/limiter/token_bucket.rs Bucket::retune) and of
-- engine/policy/limiter/sliding_window.rs mul_div.
local LIMB = 16777216
local function mul_div(a, b, c, up)
  if a * b < 9007199254740992 then
    local x = a * b
    if up then return ceil_div(x, c) end
    local q = math.floor(x / c)
    while q * c > x do q = q - 1 end
    while (q + 1) * c <= x do q = q + 1 end
    return q
  end
  local x = { a % LIMB, math.floor(a / LIMB) % LIMB, math.floor(a / LIMB / LIMB) }
  local y = { b % LIMB, math.floor(b / LIMB) % LIMB, math.floor(b / LIMB / LIMB) }
  local p = { 0, 0, 0, 0, 0, 0 }
  for i = 1, 3 do
    for j = 1, 3 do p[i + j - 1] = p[i + j - 1] + x[i] * y[j] end
  end
  local carry = 0
  for k = 1, 6 do
    local s = p[k] + carry
    p[k] = s % LIMB; carry = math.floor(s / LIMB)
  end
  -- Long division, one bit at a time: the remainder stays below c, so 2r - c is exact where 2r + 1 may not be.
  local q, r = 0, 0
  for k = 6, 1, -1 do
    for at = 23, 0, -1 do
      local bit = math.floor(p[k] / 2 ^ at) % 2
      local t = r - (c - r)
      if t + bit >= 0 then r = t + bit; q = q * 2 + 1 else r = r * 2 + bit; q = q * 2 end
    end
  end
  if r > 0 and up then q = q + 1 end
  return q
end

local function mul_div_ceil(a, b, c) return mul_div(a, b, c, true) end

-- compiler-rt's __powidf2, which Rust's powi is, so both stores compute the same open period.
-- Twin of f64::powi (engine/breaker/state.rs Breaker::record).
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
-- Token bucket (GCRA): `d` is the deficit, tat - now (<= 0: full); `i` the interval, `b` the burst

-- Twin of engine/rate.rs RateSpec::interval.
local function interval(rate, factor)
  if not (factor > 0 and factor < 1) then
    return math.max(ceil_div(rate.period, math.max(rate.limit, 1)), 1)
  end
  local base = rate.period / rate.limit
  return math.max(math.ceil(base / factor), 1)
end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::retune: the owed time re-timed at the new interval, the burst's change added
-- or taken, rounded up: ceil(i * (owed + (b - old b) * old i) / old i), exactly (the product may pass 2^53).
local function bucket_retune(bk, i, b)
  if i == bk.i and b == bk.b then return end
  local x = math.max(bk.d, 0) + (b - bk.b) * bk.i
  if x <= 0 then bk.d = -FAR else bk.d = mul_div_ceil(x, i, bk.i) end
  bk.i = i; bk.b = b
end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::check.
local function bucket_check(bk, permits)
  local needed = math.max(bk.d, 0) + permits * bk.i
  local cap = bk.b * bk.i
  if needed <= cap then return nil end
  return needed - cap
end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::debit.
local function bucket_debit(bk, permits) bk.d = math.max(bk.d, 0) + permits * bk.i end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::debit_bounded.
local function bucket_debit_bounded(bk, permits, max_debt)
  local base = math.max(bk.d, 0)
  local floor = (bk.b + max_debt) * bk.i
  local room = math.floor(math.max(floor - base, 0) / bk.i)
  local taken = math.min(permits, room)
  bk.d = base + taken * bk.i
  return taken
end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::credit.
local function bucket_credit(bk, permits)
  local d = bk.d - permits * bk.i
  if d <= 0 then bk.d = -FAR else bk.d = d end
end

-- Twin of engine/policy/limiter/token_bucket.rs Bucket::remaining.
local function bucket_remaining(bk)
  local def = math.max(bk.d, 0)
  local cap = bk.b * bk.i
  if def >= cap then return 0 end
  return math.floor((cap - def) / bk.i)
end

-- Windows (fixed_window, sliding_window): `s` is the current window's start in milliseconds since the epoch,
-- `c` its count, `p` the previous window's (sliding only), `w` the period (ns, whole milliseconds), `l` the
-- limit in force. Windows are aligned to the epoch: a window holds NOW_MS when its start is NOW_MS rounded
-- down to the period.

-- Twin of engine/policy/limiter/mod.rs window_start (in milliseconds).
local function window_start(w) local wm = w / 1000000; return NOW_MS - NOW_MS % wm end
-- The start of the window holding `ms`.
local function window_of(ms, w) local wm = w / 1000000; return ms - ms % wm end
-- Nanoseconds into the window holding now.
local function window_elapsed(w) return (NOW_MS % (w / 1000000)) * 1000000 + NOW_SUB end

-- Twin of engine/rate.rs RateSpec::window_limit.
local function window_limit(rate, factor)
  if not (factor > 0 and factor < 1) then return rate.limit end
  return math.max(math.floor(rate.limit * factor), 1)
end

-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::count_at.
local function fixed_window_count(st) if window_start(st.w) == st.s then return st.c end return 0 end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::roll.
local function fixed_window_roll(st)
  local s = window_start(st.w)
  if s ~= st.s then st.s = s; st.c = 0 end
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::fresh.
local function fixed_window_fresh(rate, factor)
  return { kind = 'fixed_window', s = 0, c = 0, p = 0, w = math.max(rate.period, 1), l = window_limit(rate, factor) }
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::sync.
local function fixed_window_sync(st, rate, factor)
  local w = math.max(rate.period, 1)
  if w ~= st.w then st.c = fixed_window_count(st); st.w = w; st.s = window_start(w) end
  st.l = window_limit(rate, factor)
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::check.
local function fixed_window_check(st, permits)
  if fixed_window_count(st) + permits <= st.l then return nil end
  return math.max(st.w - window_elapsed(st.w), 1)
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::debit.
local function fixed_window_debit(st, permits) fixed_window_roll(st); st.c = st.c + permits end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::debit_bounded.
local function fixed_window_debit_bounded(st, permits, max_debt)
  fixed_window_roll(st)
  local taken = math.min(permits, math.max(st.l + max_debt - st.c, 0))
  st.c = st.c + taken
  return taken
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::credit (`charged`: ms since the epoch).
local function fixed_window_credit(st, permits, charged)
  fixed_window_roll(st)
  if charged and window_of(charged, st.w) == st.s then st.c = math.max(st.c - permits, 0) end
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::remaining.
local function fixed_window_remaining(st) return math.max(st.l - fixed_window_count(st), 0) end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::reset_after.
local function fixed_window_reset_after(st)
  if fixed_window_count(st) > 0 then return st.w - window_elapsed(st.w) end
  return 0
end
-- Twin of engine/policy/limiter/fixed_window.rs FixedWindow::is_full.
local function fixed_window_is_full(st) return fixed_window_count(st) == 0 end

-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::at: previous, current, elapsed.
local function sliding_window_at(st)
  local s, e = window_start(st.w), window_elapsed(st.w)
  if s == st.s then return st.p, st.c, e end
  if s == st.s + st.w / 1000000 then return st.c, 0, e end
  return 0, 0, e
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::weighted.
local function sliding_window_weighted(st, p, e) return mul_div(p, math.max(st.w - e, 0), st.w, true) end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::elapsed_for.
local function sliding_window_elapsed_for(st, p, room)
  if p == 0 then return 0 end
  return math.max(st.w - mul_div(room, st.w, p, false), 0)
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::roll.
local function sliding_window_roll(st)
  local p, c = sliding_window_at(st)
  st.s = window_start(st.w); st.p = p; st.c = c
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::fresh.
local function sliding_window_fresh(rate, factor)
  return { kind = 'sliding_window', s = 0, c = 0, p = 0, w = math.max(rate.period, 1), l = window_limit(rate, factor) }
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::sync.
local function sliding_window_sync(st, rate, factor)
  local w = math.max(rate.period, 1)
  if w ~= st.w then sliding_window_roll(st); st.w = w; st.s = window_start(w) end
  st.l = window_limit(rate, factor)
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::check.
local function sliding_window_check(st, permits)
  local p, c, e = sliding_window_at(st)
  if c + sliding_window_weighted(st, p, e) + permits <= st.l then return nil end
  local wait
  local room = st.l - (c + permits)
  if room >= 0 then wait = math.max(sliding_window_elapsed_for(st, p, room) - e, 0)
  else wait = (st.w - e) + sliding_window_elapsed_for(st, c, math.max(st.l - permits, 0)) end
  return math.max(wait, 1)
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::debit.
local function sliding_window_debit(st, permits) sliding_window_roll(st); st.c = st.c + permits end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::debit_bounded.
local function sliding_window_debit_bounded(st, permits, max_debt)
  local p, c, e = sliding_window_at(st)
  sliding_window_roll(st)
  local used = c + sliding_window_weighted(st, p, e)
  local taken = math.min(permits, math.max(st.l + max_debt - used, 0))
  st.c = st.c + taken
  return taken
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::credit (`charged`: ms since the epoch).
local function sliding_window_credit(st, permits, charged)
  sliding_window_roll(st)
  if not charged then return end
  local cs = window_of(charged, st.w)
  if cs == st.s then st.c = math.max(st.c - permits, 0)
  elseif cs + st.w / 1000000 == st.s then st.p = math.max(st.p - permits, 0) end
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::remaining.
local function sliding_window_remaining(st)
  local p, c, e = sliding_window_at(st)
  return math.max(st.l - (c + sliding_window_weighted(st, p, e)), 0)
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::reset_after.
local function sliding_window_reset_after(st)
  local p, c, e = sliding_window_at(st)
  if c > 0 then return (st.w - e) + st.w end
  if p > 0 then return st.w - e end
  return 0
end
-- Twin of engine/policy/limiter/sliding_window.rs SlidingWindow::is_full.
local function sliding_window_is_full(st)
  local p, c = sliding_window_at(st)
  return c == 0 and p == 0
end

-- The limiters by algorithm: twin of engine/policy/limiter/mod.rs Limit (each entry a Limiter's methods).
local LIMITERS = {
  token_bucket = {
    fresh = function(rate, factor)
      return { kind = 'token_bucket', d = -FAR, i = interval(rate, factor), b = rate.burst }
    end,
    sync = function(bk, rate, factor) bucket_retune(bk, interval(rate, factor), rate.burst) end,
    check = bucket_check, debit = bucket_debit, debit_bounded = bucket_debit_bounded,
    credit = bucket_credit, remaining = bucket_remaining,
    capacity = function(bk) return bk.b end,
    reset_after = function(bk) return math.max(bk.d, 0) end,
    is_full = function(bk) return bk.d <= 0 end,
  },
  fixed_window = {
    fresh = fixed_window_fresh, sync = fixed_window_sync, check = fixed_window_check,
    debit = fixed_window_debit, debit_bounded = fixed_window_debit_bounded, credit = fixed_window_credit,
    remaining = fixed_window_remaining, capacity = function(st) return st.l end,
    reset_after = fixed_window_reset_after, is_full = fixed_window_is_full,
  },
  sliding_window = {
    fresh = sliding_window_fresh, sync = sliding_window_sync, check = sliding_window_check,
    debit = sliding_window_debit, debit_bounded = sliding_window_debit_bounded, credit = sliding_window_credit,
    remaining = sliding_window_remaining, capacity = function(st) return st.l end,
    reset_after = sliding_window_reset_after, is_full = sliding_window_is_full,
  },
}

-- A node's slice of its levels' permits (capacity leasing)

-- Twin of engine/policy/share.rs slice_size.
local function slice_size(available, permits, want) return math.max(math.min(available, permits + want), permits) end

-- Twin of engine/policy/share.rs slice_take: `lims` are limiter states (each with its `kind`), every one
-- granting `permits` now.
local function slice_take(lims, permits, want)
  local available = nil
  for _, st in ipairs(lims) do
    local r = LIMITERS[st.kind].remaining(st)
    if available == nil or r < available then available = r end
  end
  local taken = slice_size(available or (permits + want), permits, want)
  for _, st in ipairs(lims) do LIMITERS[st.kind].debit(st, taken) end
  return taken
end

-- Twin of engine/policy/share.rs slice_give (`taken_at`: ms since the epoch, as a window's credit takes it).
local function slice_give(lims, permits, taken_at)
  for _, st in ipairs(lims) do LIMITERS[st.kind].credit(st, permits, taken_at) end
end

-- Twin of engine/level.rs LevelCell::sync (and of Limit::sync: another algorithm starts fresh).
local function level_sync(cell, rate, factor)
  if rate == nil then cell.lim = nil; return end
  local st = cell.lim
  if st == nil or st.kind ~= rate.algorithm then cell.lim = LIMITERS[rate.algorithm].fresh(rate, factor)
  else LIMITERS[st.kind].sync(st, rate, factor) end
end


---------------------------------------------------------------------------------------------------------
-- Circuit breaker: its sliding window and its transitions

-- Twin of engine/breaker/state.rs Breaker::new.
local function breaker_new(spec)
  return { ph = 'c', s = 0, u = 0, pl = 0, sc = 0, c = 0, r = 0, e = 0, wl = spec.window, w = {}, dirty = false }
end

-- Twin of engine/breaker/window.rs Window::totals.
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

-- Twin of engine/breaker/window.rs Window::record.
local function window_record(b, failed)
  local slot_len = math.max(math.floor(b.wl / SLOTS), 1)
  local ep = slot_epoch(slot_len)
  local i = (ep % SLOTS) + 1
  local s = b.w[i]
  if s == nil or s.ep ~= ep then s = { ep = ep, calls = 0, fails = 0 }; b.w[i] = s end
  s.calls = s.calls + 1
  if failed then s.fails = s.fails + 1 end
end

-- Twin of engine/breaker/state.rs Breaker::state.
local function breaker_state(b)
  if b.ph == 'c' then return 'closed' end
  if b.ph == 'o' and 0 < b.u then return 'open' end
  return 'half_open'
end

-- Twin of engine/breaker/state.rs Breaker::tick.
local function breaker_tick(b, spec)
  if spec.window ~= b.wl then b.w = {}; b.wl = spec.window; b.dirty = true end
  if b.ph == 'o' and 0 >= b.u then
    b.ph = 'h'; b.pl = spec.probes; b.sc = 0; b.s = b.u; b.e = b.e + 1; b.dirty = true
    return 'open:half_open:open period over'
  end
  return nil
end

-- Twin of engine/breaker/state.rs Breaker::admit.
local function breaker_admit(b, spec)
  local t = breaker_tick(b, spec)
  if t then transitions[#transitions + 1] = t end
  if b.ph == 'c' then return 'allowed' end
  if b.ph == 'o' then return 'rejected', b.u end
  if b.pl > 0 then b.pl = b.pl - 1; b.dirty = true; return 'probe', b.e end
  return 'rejected', math.min(math.max(spec.open, 1), 1000000000)
end

-- Twin of engine/breaker/state.rs Breaker::cancel_probe.
local function breaker_cancel_probe(b, epoch)
  if b.ph == 'h' and epoch == b.e then b.pl = b.pl + 1; b.dirty = true end
end

-- Twin of engine/breaker/state.rs Breaker::open.
local function breaker_open(b, duration)
  b.ph = 'o'; b.u = math.min(duration, FAR); b.s = 0; b.w = {}; b.c = 0; b.dirty = true
end

-- Twin of engine/breaker/state.rs Breaker::close.
local function breaker_close(b)
  b.ph = 'c'; b.s = 0; b.w = {}; b.c = 0; b.r = 0; b.dirty = true
end

-- Twin of engine/breaker/state.rs Breaker::record.
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

-- Twin of engine/breaker/state.rs Breaker::snapshot.
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


---------------------------------------------------------------------------------------------------------
-- Adaptive rate (AIMD)

-- Twin of engine/adaptive.rs AdaptiveRate::factor.
local function pressure_factor(p, adaptive)
  if adaptive then return p.fa end
  return 1.0
end

-- Twin of engine/adaptive.rs AdaptiveRate::on_grant.
local function adaptive_on_grant(p, spec)
  if p.fa >= 1 or 0 < p.ls + spec.every then return end
  p.fa = math.min(p.fa + spec.step, 1.0); p.ls = 0; p.dirty = true
end

-- Twin of engine/adaptive.rs AdaptiveRate::on_throttle.
local function adaptive_on_throttle(p, spec)
  if p.ld ~= nil and 0 < p.ld + spec.cooldown then return false end
  local lowered = math.max(p.fa * spec.decrease, spec.floor)
  p.ld = 0; p.ls = 0; p.dirty = true
  if lowered < p.fa then p.fa = lowered; return true end
  return false
end


---------------------------------------------------------------------------------------------------------
-- Figures of the tightest levels, reported with every decision

-- Twin of engine/policy/levels.rs Tightest::default.
local function tightest_new() return { remaining = nil, limit = 0, reset = 0, headroom = nil, inf = 0, max = 0 } end

-- Twin of engine/policy/levels.rs Tightest::observe.
local function observe(t, cell, max_in_flight)
  local st = cell.lim
  if st then
    local L = LIMITERS[st.kind]
    local r = L.remaining(st)
    if t.remaining == nil or r < t.remaining then t.remaining = r; t.limit = L.capacity(st); t.reset = L.reset_after(st) end
  end
  if max_in_flight then
    local h = math.max(max_in_flight - cell.f, 0)
    if t.headroom == nil or h < t.headroom then t.headroom = h; t.inf = cell.f; t.max = max_in_flight end
  end
end

-- Twin of engine/policy/levels.rs level_denial: why one level (synced) would deny `permits` to a class it
-- holds `rtok` tokens and `rslot` leases back from, and the wait (the rate's, or the concurrency wait when it
-- is full; the longer, the rate among equals). nil: it grants.
local function level_denial(cell, max_in_flight, permits, conc_retry, rtok, rslot)
  local rate = cell.lim and LIMITERS[cell.lim.kind].check(cell.lim, permits + rtok)
  local full = max_in_flight and cell.f + rslot >= max_in_flight
  local cwait = math.max(conc_retry, 1000000)
  if full and (not rate or cwait > rate) then return 'concurrency_limited', cwait end
  if rate then return 'rate_limited', rate end
  return nil
end

-- Twin of engine/policy/levels.rs Tightest::decision (its figures).
local function figures(t) return { t.remaining or 0, t.limit, t.reset, t.inf, t.max } end

---------------------------------------------------------------------------------------------------------
-- What a release settles

-- What `used` permits settle against the `acquired` ones: 'refund' or 'charge' and how many, or 'even'.
-- Twin of engine/policy/release.rs settlement.
local function settlement(acquired, used)
  if used and used < acquired then return 'refund', acquired - used end
  if used and used > acquired then return 'charge', used - acquired end
  return 'even', 0
end

---------------------------------------------------------------------------------------------------------
-- One identity's flood of throttle reports acts as one report

-- Notes a report by `who` ('' for anonymous) now in `rep` (identity -> when it last reported, relative);
-- true when it starts a flood (so it takes effect), false when it continues one.
-- Twin of engine/reporters.rs Reporters::admit.
local function reporters_admit(rep, who, quiet)
  if who == '' then return true end
  for id, at in pairs(rep) do if at <= -quiet then rep[id] = nil end end
  local continues = rep[who] ~= nil
  rep[who] = 0
  return not continues
end
