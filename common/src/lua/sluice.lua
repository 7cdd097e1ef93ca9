#!lua name=sluice
--[[
Sluice's server-side function library (wire protocol v1, docs/PROTOCOL.md).

Every change of a job's state is one call of one function here, so no client ever reads and then
writes across round trips. Each function takes exactly one key, the queue's prefix `sluice:{Q}:`,
and derives the queue's other keys from it; they all share the `{Q}` hash tag, so one call touches
one Redis Cluster slot. Times come from the server's clock (TIME), so a fleet with skewed clocks
still agrees on when a delayed job is due.

Errors are replied as `SLUICE_INVALID <why>`, `SLUICE_TOO_LARGE <why>` or `SLUICE_DENIED <why>`;
nothing is written then: every function checks its key and every argument (counts, whole
numbers and their ranges, ids, stream entry ids) before its first write. A Lua runtime error
(a defect here) is replied as `SLUICE_BUG <message>`.

The sections follow the Rust store's files (common/src/store/): shared helpers, then enqueue.rs,
lookup.rs, listing.rs, lifecycle.rs (and delivery.rs), limits.rs, admin.rs, and the registration
of every function.

Commands a function runs are checked against the caller's ACL user. Functions that move a job
through its life (all but enqueue, jobs and version) first check that the caller may XACK the queue's
stream, which the producer user of deploy/redis/users.acl may not: a producer can enqueue and
read, never start, finish or cancel a job, even though it shares the commands enqueue needs.
]]

local VERSION = '__SLUICE_LIB_VERSION__'

local DEFAULT_EVENTS_MAXLEN = 10000
local DEFAULT_MAX_BYTES = 1048576
local DEFAULT_RETENTION_MS = 86400000
local DEFAULT_DEAD_MAXLEN = 100000
local HISTORY_MAX = 4096
local JITTER_MS = 50

-- Bounds of the arguments (docs/PROTOCOL.md, "Limits").
local DAY_MS = 86400000
local MAX_DELAY_MS = 366 * DAY_MS        -- delays and run-at times: at most this far ahead
local MAX_DEDUPE_TTL_MS = 90 * DAY_MS
local MAX_DURATION_MS = 10 * 366 * DAY_MS -- retention and other durations
local MAX_DEDUPE_KEY = 256                -- bytes
local MAX_BYTES_LIMIT = 512 * 1048576     -- the largest max_bytes a caller may ask for
local MAX_LEN = 1000000000                -- stream lengths (maxlen)
local MAX_COUNT = 100000                  -- entries or jobs one call may read or promote
local WEBHOOK_UPSTREAM = 'sluice-webhook' -- job.rs WEBHOOK_UPSTREAM
local MAX_TEXT = 65536                    -- bytes of an error text, class, reason or raw excerpt

-- ==== helpers shared by the functions below ====

-- A refusal: raised from any depth, replied by `guarded` as `<kind> <why>` (no script location).
local function refuse(kind, why)
  error({sluice = kind .. ' ' .. why}, 0)
end

local function invalid(why) refuse('SLUICE_INVALID', why) end

-- A short, printable rendering of a bad argument for an error text.
local function shown(v)
  if v == nil then return 'nothing' end
  v = tostring(v)
  if #v > 40 then v = string.sub(v, 1, 40) .. '...' end
  return "'" .. string.gsub(v, '%c', '?') .. "'"
end

-- A whole-number argument in [lo, hi] (decimal digits, a leading '-' only where lo < 0);
-- nil or '' is `default` when there is one. -> the number, or nil and the refusal's text
local function checked_int(v, name, lo, hi, default)
  -- The common case first, without a pattern match.
  if v == '0' and lo <= 0 then return 0 end
  if v == nil or v == '' then
    if default ~= nil then return default end
    return nil, 'SLUICE_INVALID ' .. name .. ': missing'
  end
  if #v > 20 or not string.match(v, '^%-?%d+$') then
    return nil, 'SLUICE_INVALID ' .. name .. ': ' .. shown(v) .. ' is not a whole number'
  end
  local n = tonumber(v)
  if n < lo or n > hi then
    return nil, 'SLUICE_INVALID ' .. name .. ': ' .. v .. ' is outside '
      .. string.format('%d', lo) .. '..' .. string.format('%d', hi)
  end
  return n
end

-- `checked_int`, refusing the call on a bad value. -> the number
local function int(v, name, lo, hi, default)
  local n, err = checked_int(v, name, lo, hi, default)
  if n == nil then error({sluice = err}, 0) end
  return n
end

-- A stream length for XADD MAXLEN, as the caller's string (see now_ms) or the default's.
local function maxlen(v, name, default)
  if v == nil or v == '' then return tostring(default) end
  int(v, name, 1, MAX_LEN)
  return v
end

-- Text stored on a job or in a dead letter: at most MAX_TEXT bytes; nil is ''.
local function text(v, name)
  if v == nil then return '' end
  if #v > MAX_TEXT then invalid(name .. ': ' .. #v .. ' bytes, over ' .. MAX_TEXT) end
  return v
end

-- A ready-stream entry as functions name it, or '' where `optional`: `<ms>-<seq>` in the normal
-- lane, `high/<ms>-<seq>` or `low/<ms>-<seq>` in the others (see "lanes" below); `unlaned`: a
-- plain stream entry id only (the dead-letter stream's).
local function entry_id(v, name, optional, unlaned)
  if optional and (v == nil or v == '') then return '' end
  local raw = v
  if v and not unlaned then raw = string.match(v, '^high/(.*)$') or string.match(v, '^low/(.*)$') or v end
  if raw == nil or #raw > 41 or not string.match(raw, '^%d+%-%d+$') then
    invalid(name .. ': ' .. shown(v) .. ' is not a stream entry id')
  end
  return v
end

-- The consumer group's name, a consumer's name.
local function name_arg(v, name)
  if v == nil or v == '' or #v > 256 then invalid(name .. ': must be 1 to 256 bytes') end
  return v
end

-- The one key of a queue's functions: `sluice:{Q}:` for a queue name Q (1 to 64 of
-- [A-Za-z0-9_.-], a partition `Q#i` too). Anything else, the limiter's `sluice:{u:NAME}:`
-- included, is refused before anything is read or written.
local function queue_key(keys)
  local p = keys[1]
  if #keys ~= 1 or type(p) ~= 'string' then invalid('keys: exactly one, sluice:{<queue>}:') end
  local q = string.match(p, '^sluice:{([%w_%.%-]+)}:$')
    or string.match(p, '^sluice:{([%w_%.%-]+#%d+)}:$')
  if not q or #q > 72 or #string.match(q, '^[^#]*') > 64 then
    invalid('key: ' .. shown(p) .. ' is not sluice:{<queue>}: (a queue is 1 to 64 of [A-Za-z0-9_.-])')
  end
  return p
end

-- The one key of the limiter's functions: `sluice:{u:NAME}:` for an upstream name.
local function upstream_key(keys)
  local p = keys[1]
  if #keys ~= 1 or type(p) ~= 'string' then invalid('keys: exactly one, sluice:{u:<upstream>}:') end
  local u = string.match(p, '^sluice:{u:(%w[%w_%-]*)}:$')
  if not u or #u > 64 then
    invalid('key: ' .. shown(p) .. ' is not sluice:{u:<upstream>}:')
  end
  return p
end

-- No more arguments than `n` (a caller that sends more has the protocol wrong).
local function at_most(args, n)
  if #args > n then invalid('arguments: ' .. #args .. ', at most ' .. n .. ' expected') end
end

-- (entry, id) pairs from args[from..]: checked, as a list of {entry, id}.
local function pairs_from(args, from)
  if (#args - from + 1) % 2 ~= 0 then invalid('arguments: (entry, id) pairs are ragged') end
  local out = {}
  for i = from, #args, 2 do
    local id = args[i + 1]
    if #id == 0 or #id > 128 or string.find(id, '[{}%s]') then
      invalid('id: ' .. shown(id) .. ' is not a job id')
    end
    out[#out + 1] = {entry_id(args[i], 'entry'), id}
  end
  return out
end

-- The server's clock in Unix ms, as a number and as a string. Hot paths pass the string to
-- redis.call: Redis 7.0 turns a Lua number argument into text with snprintf("%.17g"), which
-- costs more than the command it is passed to.
local function now_ms()
  local t = redis.call('TIME')
  local us = t[2]
  local ms_s = t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
  return tonumber(ms_s), ms_s
end

-- `maxlen` is passed as the caller's string argument (see now_ms).
local function event(p, maxlen, id, state, info)
  if info and info ~= '' then
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'id', id, 'state', state, 'info', info)
  else
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'id', id, 'state', state)
  end
end

-- One event for jobs that reached the same state in one call: `id` for one job, else `ids`
-- (space-separated; job ids hold no spaces). One XADD instead of one per job.
local function events(p, maxlen, ids, state)
  if #ids == 1 then
    event(p, maxlen, ids[1], state)
  elseif #ids > 1 then
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'ids', table.concat(ids, ' '),
      'state', state)
  end
end

-- Per-state counters: live states are exact gauges, terminal states are totals.
local function move(p, from, to)
  if from then redis.call('HINCRBY', p .. 'counts', from, '-1') end
  if to then redis.call('HINCRBY', p .. 'counts', to, '1') end
end

local function terminal(state)
  return state == 'completed' or state == 'dead' or state == 'cancelled'
end

-- ---- lanes ----
-- A queue's ready jobs wait in lanes, one stream each in the queue's slot: `stream` (normal),
-- `stream:high` and `stream:low`; fetch reads them in that order of priority (with aging, see
-- fetch). An entry of a lane other than normal is named `<lane>/<ms>-<seq>` wherever an entry
-- is named (the job hash's `entry`, replies, arguments), so its stream follows from the name.
-- A job not in the normal lane has `lane` in its hash, so it goes back to its lane.
local LANES = {'high', '', 'low'} -- in the order fetch reads them

local function lane_stream(p, lane)
  if lane == '' then return p .. 'stream' end
  return p .. 'stream:' .. lane
end

-- The stream of entry `entry` (as functions name it) and its id in that stream.
local function split_entry(p, entry)
  local lane, raw = string.match(entry, '^(%l+)/(.+)$')
  if lane == 'high' or lane == 'low' then return p .. 'stream:' .. lane, raw end
  return p .. 'stream', entry
end

local function lane_entry(lane, raw)
  if lane == '' then return raw end
  return lane .. '/' .. raw
end

-- A job of lane `lane` (not normal): its hash says so, and so does the queue's `lanes` key, from
-- then on: fetch reads only the normal lane of a queue that never had another.
local function mark_lane(p, jk, lane)
  redis.call('HSET', jk, 'lane', lane)
  redis.call('SET', p .. 'lanes', '1')
end

-- The lane of a priority from a spec ('' for normal, or nil).
local function lane_of(priority)
  if priority == 'high' or priority == 'low' then return priority end
  return ''
end

-- Acknowledges a delivered entry. Its memory is freed in bulk by `trim_acked` (XDEL per entry
-- costs more than the rest of a completion).
local function ack_entry(p, group, entry)
  if entry and entry ~= '' then
    local stream, raw = split_entry(p, entry)
    pcall(redis.call, 'XACK', stream, group, raw)
  end
end

-- Acknowledges delivered entries (a list of entries) in as few XACKs as the argument limit
-- allows, per lane.
local ACK_CHUNK = 500
local function ack_entries(p, group, entries)
  local by_stream = {}
  for _, entry in ipairs(entries) do
    local stream, raw = split_entry(p, entry)
    local list = by_stream[stream]
    if not list then list = {}; by_stream[stream] = list end
    list[#list + 1] = raw
  end
  for stream, raws in pairs(by_stream) do
    for from = 1, #raws, ACK_CHUNK do
      pcall(redis.call, 'XACK', stream, group, unpack(raws, from, math.min(from + ACK_CHUNK - 1, #raws)))
    end
  end
end

-- Removes an entry that was never delivered (a cancelled job's), or one handed back.
local function drop_entry(p, group, entry)
  if entry and entry ~= '' then
    local stream, raw = split_entry(p, entry)
    pcall(redis.call, 'XACK', stream, group, raw)
    redis.call('XDEL', stream, raw)
  end
end

-- Trims each lane below every entry still needed: the oldest pending (delivered, not yet
-- acknowledged) entry, or, with none pending, everything up to the group's last delivered
-- entry. Whole radix-tree nodes go at once (MINID ~), so this is cheap run every second.
local function trim_lane(stream, group)
  local ok, pending = pcall(redis.call, 'XPENDING', stream, group)
  if not ok then return end
  local minid
  if tonumber(pending[1]) > 0 then
    minid = pending[2]
  else
    local ok2, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
    if not ok2 then return end
    for _, g in ipairs(groups) do
      local name, last
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then last = g[j + 1] end
      end
      if name == group and last then
        local ms, seq = string.match(last, '^(%d+)-(%d+)$')
        if ms then minid = ms .. '-' .. (tonumber(seq) + 1) end
      end
    end
  end
  if minid and minid ~= '0-1' then
    redis.call('XTRIM', stream, 'MINID', '~', minid)
  end
end

local function trim_acked(p, group)
  for _, lane in ipairs(LANES) do trim_lane(lane_stream(p, lane), group) end
end

-- The token estimate of a decoded spec, as the limiter makes it (worker/src/limiter/tokens.rs):
-- `tokens`, else prompt characters ÷ 4 plus the answer's cap.
local function chars_in(v)
  if type(v) == 'string' then
    local _, n = string.gsub(v, '[^\128-\191]', '')
    return n
  elseif type(v) == 'table' then
    local n = 0
    for _, x in pairs(v) do n = n + chars_in(x) end
    return n
  end
  return 0
end

-- -> total, the answer's cap within it (nil when the spec gives `tokens`: no split known)
local function estimate_of(spec)
  if type(spec.tokens) == 'number' and spec.tokens >= 0 then return math.floor(spec.tokens) end
  local body = spec.request and spec.request.body
  if type(body) ~= 'table' then return 1, 0 end
  local prompt = 0
  for _, k in ipairs({'messages', 'input', 'prompt', 'system'}) do prompt = prompt + chars_in(body[k]) end
  local cap = 0
  for _, k in ipairs({'max_tokens', 'max_completion_tokens', 'max_output_tokens'}) do
    if type(body[k]) == 'number' and body[k] >= 0 then cap = math.floor(body[k]); break end
  end
  return math.max(1, math.ceil(prompt / 4)) + cap, cap
end

-- ==== tenants: fair share and budgets (docs/OPERATIONS.md, "Tenants") ====
-- A queue turns *tenanted* with its first job that names a tenant (the string key `tenanted`);
-- from then on every ready job (one without a tenant belongs to tenant `default`) waits in its
-- tenant's list `tq:<tenant>:<high|normal|low>` (id only; its spec in its hash, `fair` = its
-- token estimate), and `fair_fill` moves jobs into the lane streams in start-time fair queueing
-- order: `tenants` (ZSET) holds each backlogged tenant scored by its next job's virtual start
-- tag; the lowest goes first, and its tag then grows by the job's tokens ÷ the tenant's weight
-- (`weights`, default 1). The queue's virtual time (`fair` vt) is the tag last served; a tenant
-- that was idle comes back at max(its saved tag (`tidle`, a ZSET), vt), so an idle tenant banks
-- no credit and a new one joins at once; a saved tag the queue's vt has passed says no more than
-- none, so a move that leaves a tenant idle drops those, and all of them (vt rising to the
-- highest) when no tenant is left backlogged: `tidle` holds only tenants that would come back
-- behind vt, not every tenant the queue ever had. At completion the tag is corrected by
-- usage − estimate (shares are tokens used). `fair` window counts jobs moved but not yet
-- started: enqueue and hand-backs top it up to FAIR_WINDOW (so a blocked worker wakes), fetch
-- moves what it reads.
-- Budgets (`budget:<tenant>`: tokens and/or dollars per day or month) are charged the estimate
-- when a job is moved and corrected by usage (dollars: by the cost the worker reports); a tenant
-- whose next job does not fit is *parked* (`parked`): out of `tenants`, its jobs left in its
-- lists, queued, shown held (budget). Dollars are priced from `prices` (model -> "in out" per
-- million tokens, published by workers from their `[prices]`; `*` prices models not named).
local FAIR_WINDOW = 2
local DEFAULT_AGING_MS = 600000
-- Set when push_ready put a job in a tenant's list; `guarded` then tops the window up, once the
-- function has written its jobs' states.
local fair_pushed = false

local function tq(p, t, lane)
  if lane == '' then return p .. 'tq:' .. t .. ':normal' end
  return p .. 'tq:' .. t .. ':' .. lane
end

local function weight_of(p, t)
  local w = tonumber(redis.call('HGET', p .. 'weights', t) or '')
  if not w or w <= 0 then return 1 end
  return w
end

-- Tenant `t` has jobs to move: it joins `tenants` (unless it is there, or parked).
local function activate(p, t)
  if redis.call('ZSCORE', p .. 'tenants', t) then return end
  if redis.call('SISMEMBER', p .. 'parked', t) == 1 then return end
  local vt = tonumber(redis.call('HGET', p .. 'fair', 'vt') or '0') or 0
  local saved = tonumber(redis.call('ZSCORE', p .. 'tidle', t) or '')
  local tag = vt
  if saved then
    if saved > vt then tag = saved end
    redis.call('ZREM', p .. 'tidle', t)
  end
  redis.call('ZADD', p .. 'tenants', tag, t)
end

-- The period a budget counts in at `now` (ms): the day's number, or the month as yyyymm.
local function period_id(period, now)
  local days = math.floor(now / DAY_MS)
  if period ~= 'month' then return string.format('%d', days) end
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%d', y * 100 + m)
end

-- The budget of tenant `t` now (nil: none): {tokens = limit or nil, spent, dollars = limit or
-- nil, dspent, tag}, spent in the current period (a new period starts at 0). `tag` names what a
-- reservation is charged to: the period and the budget's generation (`gen`, new each time the
-- budget is created), `<pid>:<gen>`.
local function budget_now(p, t, now)
  local bk = p .. 'budget:' .. t
  local b = redis.call('HMGET', bk, 'tokens', 'spent', 'period', 'pid', 'dollars', 'dspent', 'gen')
  local r = {tokens = tonumber(b[1] or ''), dollars = tonumber(b[5] or ''), spent = 0, dspent = 0}
  if not r.tokens and not r.dollars then return nil end
  local pid = period_id(b[3], now)
  r.tag = pid .. ':' .. (b[7] or '')
  if b[4] ~= pid then
    redis.call('HSET', bk, 'spent', '0', 'dspent', '0', 'pid', pid)
  else
    r.spent = tonumber(b[2] or '0') or 0
    r.dspent = tonumber(b[6] or '0') or 0
  end
  return r
end

-- Whether budget `b` (budget_now's) has room left at all.
local function budget_room(b)
  return not b or ((not b.tokens or b.spent < b.tokens) and (not b.dollars or b.dspent < b.dollars))
end

-- Dollars, printed for HINCRBYFLOAT and HSET (no exponent).
local function dollars(v) return string.format('%.12f', v) end

-- What job `jk` (estimated at `est` tokens) is reserved at in dollars: the prompt's part of the
-- estimate at its model's input price, the answer's cap at its output price (a spec that gives
-- `tokens`: all of it at the higher); a model without a price (nor `*`) costs 0.
local function cost_estimate(p, jk, est)
  local ok, spec = pcall(cjson.decode, redis.call('HGET', jk, 'spec') or '')
  if not ok or type(spec) ~= 'table' then spec = {} end
  local body = type(spec.request) == 'table' and spec.request.body
  local model = type(body) == 'table' and type(body.model) == 'string' and body.model or '*'
  local pr = redis.call('HMGET', p .. 'prices', model, '*')
  local pin, pout = string.match(pr[1] or pr[2] or '', '^(%S+) (%S+)$')
  pin, pout = tonumber(pin), tonumber(pout)
  if not pin or not pout then return 0 end
  local _, cap = estimate_of(spec)
  if not cap then return est * math.max(pin, pout) / 1e6 end
  cap = math.min(cap, est)
  return ((est - cap) * pin + cap * pout) / 1e6
end

-- Whether tenant `t` has budget for job `jk` (`est` tokens) now; if so it is charged (reserved).
-- -> fits, the dollars reserved (nil: the budget has none), the budget's tag (nil: no budget)
local function budget_take(p, t, jk, est, now)
  local b = budget_now(p, t, now)
  if not b then return true end
  if b.tokens and b.spent + est > b.tokens then return false end
  local cost
  if b.dollars then
    cost = cost_estimate(p, jk, est)
    if b.dspent + cost > b.dollars then return false end
    redis.call('HINCRBYFLOAT', p .. 'budget:' .. t, 'dspent', dollars(cost))
  end
  redis.call('HINCRBY', p .. 'budget:' .. t, 'spent', est)
  return true, cost, b.tag
end

-- The next job of tenant `t`: high, normal, low, except that a normal or low job that has waited
-- since before `before` (ms; the aging bound) goes first. -> id, lane (nil when none)
local function pop_job(p, t, laned, before)
  if laned then
    for _, lane in ipairs({'low', ''}) do
      local head = redis.call('LINDEX', tq(p, t, lane), 0)
      local created = head and tonumber(redis.call('HGET', p .. 'job:' .. head, 'created_ms') or '')
      if created and created < before then
        return redis.call('LPOP', tq(p, t, lane)), lane
      end
    end
    for _, lane in ipairs(LANES) do
      local id = redis.call('LPOP', tq(p, t, lane))
      if id then return id, lane end
    end
    return nil
  end
  return redis.call('LPOP', tq(p, t, '')), ''
end

-- Moves up to `n` jobs from the tenants' lists into the lane streams, in fair order. -> moved
local function fair_fill(p, n, laned, aging)
  local now = now_ms()
  local moved, vt, spins, idled = 0, nil, 0, false
  local weights = {}
  local budgets = redis.call('SCARD', p .. 'budgets') > 0
  while moved < n and spins < n + 64 do
    spins = spins + 1
    local head = redis.call('ZRANGE', p .. 'tenants', 0, 0, 'WITHSCORES')
    if not head[1] then break end
    local t, tag = head[1], tonumber(head[2])
    local id, lane = pop_job(p, t, laned, now - aging)
    local left = 1
    if id then
      local jk = p .. 'job:' .. id
      local f = redis.call('HMGET', jk, 'state', 'fair', 'entry')
      if f[1] == 'queued' and f[2] and (not f[3] or f[3] == '') then
        local est = tonumber(f[2]) or 1
        local fits, cost, tag_of = true, nil, nil
        if budgets then fits, cost, tag_of = budget_take(p, t, jk, est, now) end
        if fits then
          local raw = redis.call('XADD', lane_stream(p, lane), '*', 'id', id)
          local fields = {'entry', lane_entry(lane, raw), 'reserved', '1'}
          -- Charged to a budget: to which (`bres`) and, in dollars, how much (`dres`).
          if tag_of then fields[5] = 'bres'; fields[6] = tag_of end
          if cost then fields[#fields + 1] = 'dres'; fields[#fields + 1] = dollars(cost) end
          redis.call('HSET', jk, unpack(fields))
          moved = moved + 1
          vt = tag
          local w = weights[t]
          if not w then w = weight_of(p, t); weights[t] = w end
          tag = tag + est / w
        else
          -- Over budget: the job goes back to the head of its list, the tenant is parked.
          redis.call('LPUSH', tq(p, t, lane), id)
          redis.call('ZREM', p .. 'tenants', t)
          redis.call('ZADD', p .. 'tidle', tag, t)
          idled = true
          redis.call('SADD', p .. 'parked', t)
          left = -1
        end
      end
      if left > 0 then
        left = redis.call('EXISTS', tq(p, t, 'high'), tq(p, t, ''), tq(p, t, 'low'))
      end
    else
      left = 0
    end
    if left == 0 then
      redis.call('ZREM', p .. 'tenants', t)
      redis.call('ZADD', p .. 'tidle', tag, t)
      idled = true
    elseif left > 0 then
      redis.call('ZADD', p .. 'tenants', tag, t)
    end
  end
  if moved > 0 then
    -- Saved tags vt has passed are dropped (see "tenants"), only when this call saved one, so a
    -- queue whose tenants all stay backlogged pays nothing for it. With no tenant backlogged,
    -- vt moves up to the highest saved tag and every saved tag goes (start-time fair queueing's
    -- rule for an idle server: nobody waits, so nobody is owed a place).
    if idled then
      local top = nil
      if not redis.call('ZRANGE', p .. 'tenants', 0, 0)[1] then
        top = tonumber(redis.call('ZRANGE', p .. 'tidle', -1, -1, 'WITHSCORES')[2] or '')
      end
      if top then
        if top > vt then vt = top end
        redis.call('ZREMRANGEBYSCORE', p .. 'tidle', '-inf', '+inf')
      else
        redis.call('ZREMRANGEBYSCORE', p .. 'tidle', '-inf', '(' .. vt)
      end
    end
    redis.call('HSET', p .. 'fair', 'vt', vt)
    redis.call('HINCRBY', p .. 'fair', 'window', moved)
  end
  return moved
end

-- Tops the moved-but-not-started window up to FAIR_WINDOW (not while the queue is paused).
local function fair_top_up(p, aging)
  local f = redis.call('MGET', p .. 'paused', p .. 'lanes')
  if f[1] then return 0 end
  local window = tonumber(redis.call('HGET', p .. 'fair', 'window') or '0') or 0
  if window >= FAIR_WINDOW then return 0 end
  return fair_fill(p, FAIR_WINDOW - window, f[2] and true or false, aging)
end

-- A tenanted job `id` (hash `jk`, `lane`) waits in its tenant's list; `front`: at its head (a
-- job handed back or retried had its turn already).
local function fair_queue(p, jk, id, t, lane, front)
  redis.call(front and 'LPUSH' or 'RPUSH', tq(p, t, lane), id)
  activate(p, t)
end

-- A moved job's reservation is settled: the call used `used` tokens (0: none, or not made) and
-- cost `cost` dollars (nil: 0). Its tenant's tag is corrected by used − estimate, and so is its
-- budget if the reservation went to the budget as it is now (`bres` is its tag: same period,
-- same budget; dollars by cost − `dres`); otherwise the budget is charged what the call used
-- and cost (a new period, or a budget created since, never held the reservation). Its tokens
-- are counted (`tused`).
-- `f`: the job's {reserved, tenant, fair, dres, bres} when the caller read them.
-- `call`: what one function call learned, shared by its jobs ({} for a single job): the
-- weights read, whether any tenant has a budget (`budgets`). A caller that clears `reserved`
-- (and `dres`, `bres`) itself, in the HSET it makes anyway, passes `cleared`.
local function fair_settle(p, jk, used, f, call, cleared, cost)
  f = f or redis.call('HMGET', jk, 'reserved', 'tenant', 'fair', 'dres', 'bres')
  if f[1] ~= '1' then return end
  call = call or {}
  if not cleared then redis.call('HDEL', jk, 'reserved', 'dres', 'bres') end
  local t = f[2] or 'default'
  local delta = used - (tonumber(f[3] or '') or 1)
  local dres = tonumber(f[4] or '')
  if delta ~= 0 then
    call.weights = call.weights or {}
    local w = call.weights[t]
    if not w then w = weight_of(p, t); call.weights[t] = w end
    -- ZADD XX INCR: the backlogged tenant's tag, in one command (nil when it is not there).
    if not redis.call('ZADD', p .. 'tenants', 'XX', 'INCR', delta / w, t) then
      redis.call('ZADD', p .. 'tidle', 'XX', 'INCR', delta / w, t)
    end
  end
  if call.budgets == nil then call.budgets = redis.call('SCARD', p .. 'budgets') > 0 end
  if call.budgets then
    local bk = p .. 'budget:' .. t
    -- `pid`: the budget has been looked at (creating it, or a move, set it).
    local b = redis.call('HMGET', bk, 'pid', 'gen')
    if b[1] then
      local same = f[5] == b[1] .. ':' .. (b[2] or '')
      local tokens = same and delta or used
      if tokens ~= 0 then redis.call('HINCRBY', bk, 'spent', tokens) end
      local d = (cost or 0) - (same and dres or 0)
      if d ~= 0 then redis.call('HINCRBYFLOAT', bk, 'dspent', dollars(d)) end
    end
  end
  if used > 0 then redis.call('HINCRBY', p .. 'tused', t, used) end
end

-- Where a job's spec lives: a job enqueued straight into the ready stream keeps it only in its
-- entry (`id <id> spec <spec>`), so its hash stays small enough for Redis's compact encoding
-- (listpack: every value within `hash-max-listpack-value`, 64 bytes by default). A job that
-- leaves its entry other than by completing (retry, dead letter) or that never had one
-- (scheduled, follower) keeps it in its hash's `spec` field; its later entries are `id <id>`.
-- `push_ready` adds the job's entry, carrying `spec` when given (the hash holds none).
-- The entry goes into the job's lane (its hash's `lane`, else normal).
local function push_ready(p, jk, id, spec)
  local f = redis.call('HMGET', jk, 'lane', 'fair', 'tenant')
  local lane = f[1] or ''
  if f[2] then
    -- A tenanted job goes back to the head of its tenant's list (see "tenants").
    if spec then redis.call('HSET', jk, 'spec', spec) end
    fair_settle(p, jk, 0)
    redis.call('HSET', jk, 'entry', '')
    fair_queue(p, jk, id, f[3] or 'default', lane, true)
    fair_pushed = true
    return ''
  end
  local raw
  if spec then
    raw = redis.call('XADD', lane_stream(p, lane), '*', 'id', id, 'spec', spec)
  else
    raw = redis.call('XADD', lane_stream(p, lane), '*', 'id', id)
  end
  local entry = lane_entry(lane, raw)
  redis.call('HSET', jk, 'entry', entry)
  return entry
end

-- The spec that ready-stream entry `entry` carries, or nil.
local function entry_spec(p, entry)
  if not entry or entry == '' then return nil end
  local stream, raw = split_entry(p, entry)
  local rows = redis.call('XRANGE', stream, raw, raw)
  local kv = rows[1] and rows[1][2]
  if not kv then return nil end
  for j = 1, #kv - 1, 2 do
    if kv[j] == 'spec' then return kv[j + 1] end
  end
  return nil
end

-- The spec of the job whose hash is `jk` and whose entry is `entry`: the hash's, else the
-- entry's, else nil.
local function spec_at(p, jk, entry)
  return redis.call('HGET', jk, 'spec') or entry_spec(p, entry)
end

-- The job's spec where it is kept now ('' when nowhere).
local function job_spec(p, jk)
  local f = redis.call('HMGET', jk, 'spec', 'entry')
  return f[1] or entry_spec(p, f[2]) or ''
end

-- Before a job leaves entry `entry` for good: its spec moves into its hash.
local function keep_spec(p, jk, entry)
  if not redis.call('HGET', jk, 'spec') then
    local spec = entry_spec(p, entry)
    if spec then redis.call('HSET', jk, 'spec', spec) end
  end
end

local function valid_id(id)
  return type(id) == 'string' and #id > 0 and #id <= 128 and not string.find(id, '[{}%s]')
end

-- 'conflict' when the owner stored another spec's SHA-1 than this one's (`sha`, '' when not yet
-- computed), else 'duplicate'.
local function same_or_conflict(owner_key, sha, spec)
  local had = redis.call('HGET', owner_key, 'spec_sha')
  if had and had ~= '' and had ~= (sha ~= '' and sha or redis.sha1hex(spec)) then
    return 'conflict'
  end
  return 'duplicate'
end

-- ==== store/enqueue.rs: enqueue, enqueue_many ====

-- The response cache (docs/OPERATIONS.md, "Response cache"). A job whose spec has `cache`
-- ({key, ttl_ms, max_bytes, retention_ms}) is, at enqueue: completed at once from `cache:<key>`
-- when that holds a fresh answer (a hit); else a *follower* of the identical job under way named
-- by `flight:<key>` (queued without a stream entry, listed in `followers:<leader>`); else the
-- leader (`flight:<key>` names it). Its hash keeps `cache` = "key|ttl|max_bytes|retention".
local function cache_arg(c)
  if c == nil then return nil end
  if type(c) ~= 'table' or type(c.key) ~= 'string' or not string.match(c.key, '^%x+$')
    or #c.key > 128 then
    return nil, 'SLUICE_INVALID spec.cache.key: hex digits expected'
  end
  for _, f in ipairs({'ttl_ms', 'max_bytes', 'retention_ms', 'queue_max_bytes'}) do
    local v = c[f]
    if type(v) ~= 'number' or v < 1 or v > MAX_DURATION_MS or v ~= math.floor(v) then
      return nil, 'SLUICE_INVALID spec.cache.' .. f .. ': a positive whole number expected'
    end
  end
  return c.key .. '|' .. string.format('%d|%d|%d|%d', c.ttl_ms, c.max_bytes, c.retention_ms,
    c.queue_max_bytes)
end

-- The tokens a stored `usage` (JSON text) says the call used, in and out: what a hit or a
-- follower saved.
local function usage_tokens(usage)
  local ok, u = pcall(cjson.decode, usage or '')
  if not ok or type(u) ~= 'table' then return 0, 0 end
  local input = tonumber(u.prompt_tokens) or tonumber(u.input_tokens) or 0
  local output = tonumber(u.completion_tokens) or tonumber(u.output_tokens) or 0
  if input + output == 0 then output = tonumber(u.total_tokens) or 0 end
  return math.floor(input), math.floor(output)
end

-- Counts what `n` jobs served without a call saved: tokens (`cache_tokens_saved`) and, per
-- model, tokens in and out (`saved_in:<model>`, `saved_out:<model>`, for the estimated cost).
local function count_saved(p, model, usage, n)
  local input, output = usage_tokens(usage)
  if input + output == 0 or n == 0 then return end
  local counts = p .. 'counts'
  redis.call('HINCRBY', counts, 'cache_tokens_saved', (input + output) * n)
  if type(model) == 'string' and model ~= '' and #model <= 128 then
    if input > 0 then redis.call('HINCRBY', counts, 'saved_in:' .. model, input * n) end
    if output > 0 then redis.call('HINCRBY', counts, 'saved_out:' .. model, output * n) end
  end
end

-- "key|ttl|max_bytes|retention|queue_max_bytes" -> key, ttl, max_bytes, retention, queue_max
local function cache_fields(v)
  local key, ttl, max, ret, cap = string.match(v or '', '^(%x+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  return key, tonumber(ttl), tonumber(max), tonumber(ret), tonumber(cap)
end

-- One job of an enqueue call. Counter increments are added to `tally` (applied once per call).
-- -> {'created'|'duplicate'|'conflict', id, state}, or nil and the error text
local function enqueue_one(p, now, nows, emax, max_bytes, tally, id, spec, dkey, dttl, delay, run_at)
  dkey = dkey or ''
  -- A refusal here is this job's alone (enqueue_many goes on with the others).
  local err
  dttl, err = checked_int(dttl, 'dedupe_ttl_ms', 0, MAX_DEDUPE_TTL_MS, 0)
  if err then return nil, err end
  delay, err = checked_int(delay, 'delay_ms', 0, MAX_DELAY_MS, 0)
  if err then return nil, err end
  run_at, err = checked_int(run_at, 'run_at_ms', 0, now + MAX_DELAY_MS, 0)
  if err then return nil, err end
  if id ~= '' and not valid_id(id) then
    return nil, 'SLUICE_INVALID id: 1 to 128 characters without braces or spaces (empty: one is made)'
  end
  if #dkey > MAX_DEDUPE_KEY then
    return nil, 'SLUICE_INVALID dedupe_key: ' .. #dkey .. ' bytes, over ' .. MAX_DEDUPE_KEY
  end
  if type(spec) ~= 'string' or #spec == 0 then
    return nil, 'SLUICE_INVALID spec: empty'
  end
  if #spec > max_bytes then
    return nil, 'SLUICE_TOO_LARGE spec: ' .. #spec .. ' bytes, over the limit of ' .. max_bytes
  end
  local ok, decoded = pcall(cjson.decode, spec)
  if not ok or type(decoded) ~= 'table' then
    return nil, 'SLUICE_INVALID spec: not a JSON object'
  end
  if type(decoded.upstream) ~= 'string' or decoded.upstream == '' then
    return nil, 'SLUICE_INVALID spec.upstream: missing'
  end
  if type(decoded.request) ~= 'table' or type(decoded.request.path) ~= 'string' then
    return nil, 'SLUICE_INVALID spec.request.path: missing'
  end
  local tenant = decoded.tenant
  if tenant ~= nil and (type(tenant) ~= 'string' or #tenant > 64
      or not string.match(tenant, '^[%w_%.:@%-]+$')) then
    return nil, 'SLUICE_INVALID spec.tenant: ' .. shown(tenant) .. ' is not 1 to 64 of [A-Za-z0-9_.:@-]'
  end
  local priority = decoded.priority
  if priority ~= nil and priority ~= 'high' and priority ~= 'normal' and priority ~= 'low' then
    return nil, 'SLUICE_INVALID spec.priority: ' .. shown(priority) .. ' is not high, normal or low'
  end
  local lane = lane_of(priority)
  local cache
  cache, err = cache_arg(decoded.cache)
  if err then return nil, err end

  -- The dedupe key first (SET NX GET: one command claims it or names its owner), then the id
  -- (HSETNX claims the hash). A claimed key whose id already exists points at that same job.
  -- A duplicate whose spec differs from the owner's (`spec_sha`, SHA-1 of the spec's bytes) is
  -- a `conflict`: same key, another request. Only jobs with a dedupe key store the hash (the
  -- others would pay for a SHA-1 that nothing reads: their ids are new).
  if dkey ~= '' and dttl <= 0 then
    return nil, 'SLUICE_INVALID dedupe_ttl_ms: must be positive with a dedupe key'
  end
  -- No refusal past this point. An empty id asks the library for one: `j-<server ms>-<n>`, n from
  -- the queue's counter (unique within the queue).
  if id == '' then id = 'j-' .. nows .. '-' .. redis.call('INCR', p .. 'seq') end
  local sha = ''
  if dkey ~= '' then sha = redis.sha1hex(spec) end
  if dkey ~= '' then
    local owner = redis.call('SET', p .. 'dedupe:' .. dkey, id, 'NX', 'PX', tostring(dttl), 'GET')
    if owner then
      tally.deduplicated = tally.deduplicated + 1
      local ok_key = p .. 'job:' .. owner
      return {same_or_conflict(ok_key, sha, spec), owner,
        redis.call('HGET', ok_key, 'state') or 'expired'}
    end
  end
  local jk = p .. 'job:' .. id
  local due = 0
  if run_at > now then due = run_at end
  if delay > 0 and now + delay > due then due = now + delay end
  local state = 'queued'
  if due > 0 then state = 'scheduled' end
  if redis.call('HSETNX', jk, 'state', state) == 0 then
    tally.deduplicated = tally.deduplicated + 1
    return {same_or_conflict(jk, sha, spec), id, redis.call('HGET', jk, 'state')}
  end
  if cache and due == 0 then
    local key, _, _, retention = cache_fields(cache)
    local hit = redis.call('HMGET', p .. 'cache:' .. key, 'result', 'status', 'usage')
    if hit[1] then
      -- A hit: completed now with the stored answer, no call, no quota.
      redis.call('HSET', jk, 'id', id, 'spec', spec, 'upstream', decoded.upstream,
        'attempts', '0', 'created_ms', nows, 'updated_ms', nows, 'finished_ms', nows,
        'dedupe', dkey, 'state', 'completed', 'result', hit[1], 'status', hit[2] or '',
        'usage', hit[3] or '', 'cached', '1')
      if sha ~= '' then redis.call('HSET', jk, 'spec_sha', sha) end
      redis.call('PEXPIRE', jk, retention)
      tally.completed = tally.completed + 1
      tally.cache_hits = tally.cache_hits + 1
      local body = decoded.request.body
      count_saved(p, type(body) == 'table' and body.model, hit[3], 1)
      local list = tally.ids.completed
      list[#list + 1] = id
      return {'created', id, 'completed'}
    end
    local leader = redis.call('GET', p .. 'flight:' .. key)
    local lstate = leader and redis.call('HGET', p .. 'job:' .. leader, 'state')
    if lstate and not terminal(lstate) then
      -- An identical job is under way: follow it (no entry, no call, no quota).
      redis.call('HSET', jk, 'id', id, 'spec', spec, 'upstream', decoded.upstream,
        'attempts', '0', 'created_ms', nows, 'updated_ms', nows, 'dedupe', dkey,
        'follows', leader, 'cache', cache)
      if sha ~= '' then redis.call('HSET', jk, 'spec_sha', sha) end
      redis.call('RPUSH', p .. 'followers:' .. leader, id)
      if lane ~= '' then mark_lane(p, jk, lane) end
      tally.queued = tally.queued + 1
      tally.cache_followers = tally.cache_followers + 1
      local list = tally.ids.queued
      list[#list + 1] = id
      return {'created', id, 'queued'}
    end
    redis.call('SET', p .. 'flight:' .. key, id)
    tally.cache_misses = tally.cache_misses + 1
  end
  -- A job for the ready stream keeps its spec in its entry only (see push_ready); a scheduled
  -- one in its hash. No `attempts` (absent is 0), no empty `dedupe`: a waiting job's hash holds
  -- only what it must, each value short (docs/OPERATIONS.md, "Memory").
  -- Nor `id` (the key holds it) nor `updated_ms` (absent: `created_ms`).
  -- The spec's tenant; before the spec had one, sluice-api wrote it as `metadata.tenant`.
  local meta = decoded.metadata
  if not tenant and type(meta) == 'table' and type(meta.tenant) == 'string' and meta.tenant ~= ''
      and #meta.tenant <= 64 and string.match(meta.tenant, '^[%w_%.:@%-]+$') then
    tenant = meta.tenant
  end
  -- A tenant's job makes the queue tenanted; in a tenanted queue every job waits in its tenant's
  -- list (one without a tenant in `default`'s), its spec in its hash (see "tenants"). Webhook
  -- deliveries (`tally.plain`) skip the tenants: they call no provider.
  if tenant and not tally.fair and not tally.plain then
    redis.call('SET', p .. 'tenanted', '1')
    tally.fair = true
  end
  if tally.fair then
    redis.call('HSET', jk, 'upstream', decoded.upstream, 'created_ms', nows, 'spec', spec,
      'fair', (estimate_of(decoded)))
    if due > 0 then
      redis.call('ZADD', p .. 'delayed', due, id)
      redis.call('HSET', jk, 'run_at_ms', due)
    else
      fair_queue(p, jk, id, tenant or 'default', lane, false)
      tally.fair_queued = tally.fair_queued + 1
    end
  elseif due > 0 then
    redis.call('ZADD', p .. 'delayed', due, id)
    redis.call('HSET', jk, 'upstream', decoded.upstream, 'created_ms', nows, 'run_at_ms', due,
      'spec', spec)
  else
    local raw = redis.call('XADD', lane_stream(p, lane), '*', 'id', id, 'spec', spec)
    redis.call('HSET', jk, 'upstream', decoded.upstream, 'created_ms', nows, 'entry',
      lane_entry(lane, raw))
  end
  if lane ~= '' then mark_lane(p, jk, lane) end
  if dkey ~= '' then redis.call('HSET', jk, 'dedupe', dkey, 'spec_sha', sha) end
  if tenant then redis.call('HSET', jk, 'tenant', tenant) end
  -- A job with a webhook is marked, so the call that ends it makes the delivery (hook below).
  if type(decoded.webhook) == 'table' then redis.call('HSET', jk, 'hook', '1') end
  if cache then redis.call('HSET', jk, 'cache', cache) end
  tally[state] = tally[state] + 1
  local list = tally.ids[state]
  list[#list + 1] = id
  return {'created', id, state}
end

-- `fair`: whether the queue is tenanted (see "tenants"); `plain`: never (webhook deliveries).
local function new_tally(p, plain)
  return {fair = not plain and redis.call('EXISTS', p .. 'tenanted') == 1, plain = plain,
    fair_queued = 0, queued = 0, scheduled = 0, completed = 0, deduplicated = 0, cache_hits = 0,
    cache_misses = 0, cache_followers = 0, ids = {queued = {}, scheduled = {}, completed = {}}}
end

-- The counters and the events of one enqueue call.
local function apply_tally(p, emax, tally)
  if tally.queued + tally.scheduled + tally.completed > 0 then
    -- The queue's base name (a partition `Q#i` registers Q) in the set `sluice stats` lists. On a
    -- cluster that key lives in another slot and Redis refuses the write: the caller registers
    -- the queue itself there (the Rust producer always does, once per process).
    local q = string.gsub(string.sub(p, 9, -3), '#%d+$', '')
    pcall(redis.call, 'SADD', 'sluice:queues', q)
  end
  events(p, emax, tally.ids.queued, 'queued')
  events(p, emax, tally.ids.scheduled, 'scheduled')
  events(p, emax, tally.ids.completed, 'completed')
  local created = tally.queued + tally.scheduled + tally.completed
  for _, k in ipairs({'queued', 'scheduled', 'completed', 'deduplicated', 'cache_hits',
      'cache_misses', 'cache_followers'}) do
    if tally[k] > 0 then redis.call('HINCRBY', p .. 'counts', k, tostring(tally[k])) end
  end
  if created > 0 then redis.call('HINCRBY', p .. 'counts', 'enqueued', tostring(created)) end
  if tally.fair_queued > 0 then fair_top_up(p, DEFAULT_AGING_MS) end
end

-- A job with a webhook (its hash has `hook`) has ended: its delivery job is enqueued in the
-- same call that ended it, so an ended job's webhook is never lost. The delivery names the job,
-- the URL and the API key (whose allowlist and secret the worker applies); `hook` then holds the
-- delivery's id. A re-driven job that ends again gets a new delivery.
-- `spec`: the job's, read by the caller before its entry went (nil: read here).
local function hook(p, emax, id, spec)
  local jk = p .. 'job:' .. id
  local ok
  ok, spec = pcall(cjson.decode, spec or job_spec(p, jk))
  if not ok or type(spec) ~= 'table' or type(spec.webhook) ~= 'table' then return end
  local w = spec.webhook
  local delivery = cjson.encode({upstream = WEBHOOK_UPSTREAM,
    request = {method = 'POST', path = '/', body = {job = id}},
    deliver = {job = id, url = w.url, key = w.key}})
  local now, nows = now_ms()
  local tally = new_tally(p, true)
  local r = enqueue_one(p, now, nows, emax, MAX_BYTES_LIMIT, tally, '', delivery, '', '0', '0', '0')
  if r then
    apply_tally(p, emax, tally)
    redis.call('HSET', jk, 'hook', r[2])
  end
end

-- Stores an answer under `key` for `ttl` ms, within the queue's byte budget: `cache:index` (zset,
-- key → expiry) and `cache:sizes` (hash, key → bytes) keep `cache:bytes` (the total) true.
-- Expired entries are forgotten first (up to 100 per call); then, while the new entry would go
-- over `cap` (`queues.cache_max_bytes`), the entries that would expire soonest are evicted.
-- Drops cache key `k` from the bookkeeping (not the entry itself).
local function cache_forget(p, k)
  local size = tonumber(redis.call('HGET', p .. 'cache:sizes', k) or '0') or 0
  redis.call('HDEL', p .. 'cache:sizes', k)
  redis.call('ZREM', p .. 'cache:index', k)
  if size > 0 then redis.call('DECRBY', p .. 'cache:bytes', size) end
end

local function cache_store(p, key, ttl, cap, upstream, result, status, usage)
  local now = now_ms()
  local index, sizes, total = p .. 'cache:index', p .. 'cache:sizes', p .. 'cache:bytes'
  local function forget(k) cache_forget(p, k) end
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 100)) do
    forget(k)
  end
  forget(key)
  local size = #result + #(usage or '') + #key + 64
  local used = tonumber(redis.call('GET', total) or '0') or 0
  while used + size > cap do
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if not oldest then break end
    redis.call('DEL', p .. 'cache:' .. oldest)
    forget(oldest)
    redis.call('HINCRBY', p .. 'counts', 'cache_evictions', 1)
    used = tonumber(redis.call('GET', total) or '0') or 0
  end
  local ck = p .. 'cache:' .. key
  redis.call('HSET', ck, 'result', result, 'status', status, 'usage', usage or '',
    'upstream', upstream or '')
  redis.call('PEXPIRE', ck, ttl)
  redis.call('ZADD', index, now + ttl, key)
  redis.call('HSET', sizes, key, size)
  redis.call('INCRBY', total, size)
end

-- The leader `id` of the cache entry `cache` ("key|ttl|max_bytes|retention") has ended.
-- Completed (`result` given): a 2xx answer within max_bytes is stored for ttl, and every follower
-- still waiting completes with it. Dead or cancelled (no `result`): the first follower still
-- waiting becomes the leader (its entry is added to the stream) and the others follow it; with
-- none left, the flight ends. Followers are never lost.
-- `spec`: the leader's, read by the caller before its entry went (nil: read here).
local function settle(p, emax, id, cache, result, status, usage, spec)
  local key, ttl, max, retention, cap = cache_fields(cache)
  if not key then return end
  local fk = p .. 'flight:' .. key
  local lk = p .. 'followers:' .. id
  if result then
    local code = tonumber(status) or 0
    if code >= 200 and code < 300 and #result <= max then
      local upstream = redis.call('HGET', p .. 'job:' .. id, 'upstream')
      cache_store(p, key, ttl, cap, upstream, result, status, usage)
    end
    local _, nows = now_ms()
    local done = {}
    for _, fid in ipairs(redis.call('LRANGE', lk, 0, -1)) do
      local fjk = p .. 'job:' .. fid
      local f = redis.call('HMGET', fjk, 'state', 'follows')
      if f[1] == 'queued' and f[2] == id then
        redis.call('HSET', fjk, 'state', 'completed', 'result', result, 'status', status,
          'usage', usage or '', 'finished_ms', nows, 'updated_ms', nows, 'followed', id)
        redis.call('HDEL', fjk, 'follows')
        redis.call('PEXPIRE', fjk, retention)
        done[#done + 1] = fid
      end
    end
    redis.call('DEL', lk)
    if #done > 0 then
      redis.call('HINCRBY', p .. 'counts', 'queued', tostring(-#done))
      redis.call('HINCRBY', p .. 'counts', 'completed', tostring(#done))
      local ok, decoded = pcall(cjson.decode, spec or job_spec(p, p .. 'job:' .. id))
      local body = ok and type(decoded) == 'table' and type(decoded.request) == 'table'
        and decoded.request.body
      count_saved(p, type(body) == 'table' and body.model, usage, #done)
      events(p, emax, done, 'completed')
    end
    if redis.call('GET', fk) == id then redis.call('DEL', fk) end
    return
  end
  while true do
    local fid = redis.call('LPOP', lk)
    if not fid then break end
    local fjk = p .. 'job:' .. fid
    local f = redis.call('HMGET', fjk, 'state', 'follows')
    if f[1] == 'queued' and f[2] == id then
      push_ready(p, fjk, fid)
      redis.call('HDEL', fjk, 'follows')
      redis.call('SET', fk, fid)
      local rest = redis.call('LRANGE', lk, 0, -1)
      for _, other in ipairs(rest) do
        local ojk = p .. 'job:' .. other
        if redis.call('HGET', ojk, 'follows') == id then
          redis.call('HSET', ojk, 'follows', fid)
        end
      end
      if #rest > 0 then redis.call('RENAME', lk, p .. 'followers:' .. fid) end
      return
    end
  end
  if redis.call('GET', fk) == id then redis.call('DEL', fk) end
end

local function max_bytes_arg(v)
  return int(v, 'max_bytes', 1, MAX_BYTES_LIMIT, DEFAULT_MAX_BYTES)
end

-- enqueue: ARGV id, spec, dedupe_key, dedupe_ttl_ms, delay_ms, run_at_ms, max_bytes, events_maxlen
-- -> {'created'|'duplicate'|'conflict', id, state}
local function enqueue(keys, args)
  local p = queue_key(keys)
  at_most(args, 8)
  if #args < 2 then invalid('arguments: ' .. #args .. ', at least id and spec expected') end
  local emax = maxlen(args[8], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local max_bytes = max_bytes_arg(args[7])
  local now, nows = now_ms()
  local tally = new_tally(p)
  local r, err = enqueue_one(p, now, nows, emax, max_bytes,
    tally, args[1], args[2], args[3], args[4], args[5], args[6])
  if not r then return redis.error_reply(err) end
  apply_tally(p, emax, tally)
  return r
end

-- enqueue_many: ARGV max_bytes, events_maxlen, then per job the six of enqueue (id, spec,
-- dedupe_key, dedupe_ttl_ms, delay_ms, run_at_ms)
-- -> per job {'created'|'duplicate'|'conflict', id, state} or {'error', text}; one refusal leaves the
--    other jobs alone. Many jobs share the call's fixed cost (one TIME, the counters once).
local function enqueue_many(keys, args)
  local p = queue_key(keys)
  if #args < 2 or (#args - 2) % 6 ~= 0 then
    invalid('arguments: max_bytes, events_maxlen, then six per job (' .. #args .. ' is ragged)')
  end
  local max_bytes = max_bytes_arg(args[1])
  local emax = maxlen(args[2], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local now, nows = now_ms()
  local tally = new_tally(p)
  local out = {}
  for i = 3, #args - 5, 6 do
    local r, err = enqueue_one(p, now, nows, emax, max_bytes, tally, args[i], args[i + 1],
      args[i + 2], args[i + 3], args[i + 4], args[i + 5])
    out[#out + 1] = r or {'error', err}
  end
  apply_tally(p, emax, tally)
  return out
end

-- ==== store/lookup.rs: cancel ====

-- cancel: ARGV group, id, retention_ms, events_maxlen
-- -> {'cancelled', previous} | {'refused', state} | {'missing', ''}
local function cancel(keys, args)
  local p = queue_key(keys)
  at_most(args, 4)
  local group, id = name_arg(args[1], 'group'), args[2]
  if not valid_id(id) then invalid('id: ' .. shown(id) .. ' is not a job id') end
  local retention = int(args[3], 'retention_ms', 1, MAX_DURATION_MS, DEFAULT_RETENTION_MS)
  local emax = maxlen(args[4], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local jk = p .. 'job:' .. id
  local f = redis.call('HMGET', jk, 'state', 'entry', 'hook', 'cache')
  local state = f[1]
  if not state then return {'missing', ''} end
  -- Read before its entry goes (a queued job's spec may live there only).
  local spec = (f[3] or f[4]) and spec_at(p, jk, f[2]) or nil
  if state == 'queued' then
    -- A tenanted job still in its tenant's list stays there, skipped when its turn comes.
    drop_entry(p, group, f[2])
    fair_settle(p, jk, 0)
  elseif state == 'scheduled' or state == 'retrying' then
    redis.call('ZREM', p .. 'delayed', id)
  else
    return {'refused', state}
  end
  local now = now_ms()
  redis.call('HSET', jk, 'state', 'cancelled', 'finished_ms', now, 'updated_ms', now)
  redis.call('HDEL', jk, 'entry', 'run_at_ms')
  redis.call('PEXPIRE', jk, retention)
  move(p, state, 'cancelled')
  event(p, emax, id, 'cancelled')
  if f[3] then hook(p, emax, id, spec) end
  if f[4] then settle(p, emax, id, f[4], nil, nil, nil, spec) end
  return {'cancelled', state}
end

-- ==== store/listing.rs: jobs ====

-- jobs: ARGV cursor, limit, state ('' for any) -> {next_cursor, {{id, state, attempts, created_ms,
-- updated_ms, upstream, last_error}, ...}}
-- A page of the queue's jobs (SCAN over its job hashes, so it works on the node that holds the
-- queue, cluster or not): about `limit` rows (a SCAN step may bring a few more), at most
-- 10 × limit keys looked at per call; the caller pages with the returned cursor until it is '0'.
-- SCAN's promise holds: a job present from the first page to the last is listed at least once
-- (rarely twice, if Redis resized its table meanwhile).
-- Errors are cut to 200 bytes.
local LIST_STATES = {queued = true, scheduled = true, running = true, retrying = true,
  completed = true, dead = true, cancelled = true}

local function jobs(keys, args)
  local p = queue_key(keys)
  at_most(args, 3)
  local cursor = int(args[1], 'cursor', 0, 2 ^ 52, 0)
  local limit = int(args[2], 'limit', 1, 10000, 100)
  local want = args[3] or ''
  if want ~= '' and not LIST_STATES[want] then invalid('state: ' .. shown(want) .. ' is not a state') end
  local rows, looked = {}, 0
  local pattern = p .. 'job:*'
  repeat
    local r = redis.call('SCAN', string.format('%d', cursor), 'MATCH', pattern, 'COUNT', limit, 'TYPE', 'hash')
    cursor = tonumber(r[1])
    for _, key in ipairs(r[2]) do
      looked = looked + 1
      local f = redis.call('HMGET', key, 'state', 'attempts', 'created_ms', 'updated_ms', 'upstream',
        'last_error')
      if f[1] and (want == '' or f[1] == want) then
        rows[#rows + 1] = {string.sub(key, #p + 5), f[1], f[2] or '0', f[3] or '', f[4] or f[3] or '',
          f[5] or '', string.sub(f[6] or '', 1, 200)}
      end
    end
  until cursor == 0 or #rows >= limit or looked >= 10 * limit
  return {string.format('%d', cursor), rows}
end

-- ==== store/lifecycle.rs: start, fetch, complete, retry, dead, promote, release, beat, leave, takeover ====

-- start: ARGV group, events_maxlen, consumer, then pairs (entry, id)
-- -> per pair {entry, id, 'run', spec, attempts, waits, ready_ms} | {entry, id, 'skip', state} |
--    {entry, id, 'missing'} | {entry, id, 'paused'}; ready_ms is when the job became runnable
--    (enqueued, or its run_at). While the queue is paused nothing starts: a delivered job is
--    handed back (queued again under a new entry, as `release` does) and answered `paused`.
-- `paused`: whether the queue is paused (the caller has read it).
local function start_checked(p, group, emax, consumer, list, paused)
  -- Reads first: a job key of the wrong type (WRONGTYPE) is reported `corrupt` for the caller
  -- to dead-letter, never an error halfway through the batch.
  local got = {}
  for k, pair in ipairs(list) do
    local ok, f = pcall(redis.call, 'HMGET', p .. 'job:' .. pair[2], 'state', 'entry', 'spec',
      'waits', 'created_ms', 'run_at_ms', 'attempts', 'total_attempts', 'fair')
    if ok then got[k] = f else got[k] = {corrupt = (type(f) == 'table' and f.err) or tostring(f)} end
  end
  local _, nows = now_ms()
  local out = {}
  local moved, running, fair_started = 0, {}, 0
  for k, pair in ipairs(list) do
    local entry, id = pair[1], pair[2]
    local jk = p .. 'job:' .. id
    local f = got[k]
    local state, current = f[1], f[2]
    if f.corrupt then
      out[#out + 1] = {entry, id, 'corrupt', f.corrupt}
    elseif not state then
      out[#out + 1] = {entry, id, 'missing'}
    elseif paused and (state == 'queued' or state == 'running') and current == entry then
      -- The entry's spec (handed over by fetch, else read) when the hash holds none.
      local spec = not f[3] and (pair[3] or entry_spec(p, entry)) or nil
      drop_entry(p, group, entry)
      if state == 'running' then
        -- A dead worker's job, taken over: its unfinished attempt is not counted (see release).
        redis.call('HINCRBY', jk, 'attempts', -1)
        redis.call('HINCRBY', jk, 'total_attempts', -1)
        redis.call('HSET', jk, 'state', 'queued', 'updated_ms', nows)
        move(p, 'running', 'queued')
      end
      push_ready(p, jk, id, spec)
      out[#out + 1] = {entry, id, 'paused'}
    elseif (state == 'queued' or state == 'running') and current == entry then
      local attempts = (tonumber(f[7] or '0') or 0) + 1
      redis.call('HSET', jk, 'state', 'running', 'attempts', tostring(attempts),
        'total_attempts', tostring((tonumber(f[8] or '0') or 0) + 1), 'started_ms', nows,
        'updated_ms', nows, 'consumer', consumer)
      if state == 'queued' then
        moved = moved + 1
        running[#running + 1] = id
        if f[9] then fair_started = fair_started + 1 end
      end
      out[#out + 1] = {entry, id, 'run', f[3] or pair[3] or entry_spec(p, entry) or '', attempts,
        tonumber(f[4] or '0') or 0, tonumber(f[6] or f[5] or '0') or 0}
    else
      -- terminal, cancelled, or a stale entry of a job that has moved on: never run it
      ack_entry(p, group, entry)
      out[#out + 1] = {entry, id, 'skip', state}
    end
  end
  if moved > 0 then
    redis.call('HINCRBY', p .. 'counts', 'queued', tostring(-moved))
    redis.call('HINCRBY', p .. 'counts', 'running', tostring(moved))
  end
  if fair_started > 0 then redis.call('HINCRBY', p .. 'fair', 'window', -fair_started) end
  events(p, emax, running, 'running')
  return out
end

local function start(keys, args)
  local p = queue_key(keys)
  local group, consumer = name_arg(args[1], 'group'), name_arg(args[3], 'consumer')
  local emax = maxlen(args[2], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local paused = redis.call('EXISTS', p .. 'paused') == 1
  return start_checked(p, group, emax, consumer, pairs_from(args, 4), paused)
end

-- Reads up to `n` new entries of one lane for `consumer` -> {{entry (as named), fields}, ...}.
-- The normal lane's missing group is an error for the caller (the worker makes it on NOGROUP);
-- another lane's (a queue made before lanes) is noted in `missing`, made by fetch at its end.
local function read_lane(p, group, consumer, lane, n, missing)
  local stream = lane_stream(p, lane)
  local r
  if lane == '' then
    r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n, 'STREAMS', stream, '>')
  else
    local ok
    ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer, 'COUNT', n,
      'STREAMS', stream, '>')
    if not ok then
      missing[#missing + 1] = stream
      return {}
    end
  end
  local out = {}
  if r then
    for _, e in ipairs(r[1][2]) do out[#out + 1] = {lane_entry(lane, e[1]), e[2]} end
  end
  return out
end

-- How many of a lane's next undelivered entries (at most `n`) were added before `before` (ms):
-- aged. The lane's oldest entry answers most calls (younger: none is aged); only an old one
-- asks the group where delivery stands.
local function aged_in(p, group, lane, before, n)
  if n <= 0 then return 0 end
  local stream = lane_stream(p, lane)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if not head or tonumber(string.match(head[1], '^(%d+)')) >= before then return 0 end
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then groups = {} end
  -- Without its group yet (read_lane makes it), nothing of the lane was delivered.
  local last = '0-0'
  for _, g in ipairs(groups) do
    local name, l
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'last-delivered-id' then l = g[j + 1] end
    end
    if name == group and l then last = l end
  end
  local aged = 0
  for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', n)) do
    if tonumber(string.match(e[1], '^(%d+)')) >= before then break end
    aged = aged + 1
  end
  return aged
end

-- fetch: ARGV group, events_maxlen, consumer, count[, aging_ms]
-- Reads up to `count` new entries for `consumer` (XREADGROUP without BLOCK) and starts them, so
-- a busy worker takes jobs in one round trip. Lanes are read in order, high, normal, low; but
-- entries of the normal and low lanes that have waited `aging_ms` (default 10 minutes) are read
-- before all others, so neither starves under a constant flow of higher work. A queue that never
-- had a high or low job (no `lanes` key) reads its normal lane alone, as before lanes; one that
-- had costs per call an XRANGE of each lower lane's oldest entry and an XREADGROUP per lane read.
-- -> start's reply, plus {entry, '', 'malformed', excerpt} for an entry that does not name a job.
local function fetch(keys, args)
  local p = queue_key(keys)
  at_most(args, 5)
  local group, consumer = name_arg(args[1], 'group'), name_arg(args[3], 'consumer')
  local emax = maxlen(args[2], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local count = int(args[4], 'count', 1, MAX_COUNT)
  local aging = int(args[5], 'aging_ms', 1, MAX_DURATION_MS, DEFAULT_AGING_MS)
  -- A paused queue: nothing is read (the caller learns it is paused at once). Whether the queue
  -- ever had a job outside the normal lane comes with it, in the same command.
  local flags = redis.call('MGET', p .. 'paused', p .. 'lanes', p .. 'tenanted')
  if flags[1] then return {{'', '', 'paused'}} end
  local laned = flags[2] and true or false
  -- A tenanted queue: the tenants' next jobs, in fair order, into the lanes first; and one parked
  -- tenant a call is looked at: back in turn when its budget has a new period.
  if flags[3] then
    local t = redis.call('SRANDMEMBER', p .. 'parked')
    if t then
      if budget_room(budget_now(p, t, now_ms())) then
        redis.call('SREM', p .. 'parked', t)
        activate(p, t)
      end
    end
    fair_fill(p, count, laned, aging)
  end
  local read, missing, normal_read = {}, {}, false
  local function take(lane, n)
    if n <= 0 then return end
    for _, e in ipairs(read_lane(p, group, consumer, lane, n, missing)) do read[#read + 1] = e end
    if lane == '' then normal_read = true end
  end
  -- Entries that have waited the aging bound first, the lowest lane's first (they are the
  -- oldest); then the lanes in order.
  if laned then
    local before = now_ms() - aging
    take('low', aged_in(p, group, 'low', before, count))
    take('', aged_in(p, group, '', before, count - #read))
    for _, lane in ipairs(LANES) do take(lane, count - #read) end
  else
    take('', count)
  end
  -- A lane without its group gets it once the normal lane's read showed the group is real (a
  -- refused call writes nothing); its entries are read from the next call on.
  if normal_read then
    for _, stream in ipairs(missing) do pcall(redis.call, 'XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM') end
  end
  -- Nothing undelivered in any lane: no job is between its tenant's list and its start (a
  -- window counted too high, by a job cancelled after it was moved, heals here).
  if flags[3] and #read == 0 then redis.call('HSET', p .. 'fair', 'window', '0') end
  local list = {}
  local bad = {}
  for _, e in ipairs(read) do
    local fields, id, spec = e[2], nil, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'id' then id = fields[j + 1] elseif fields[j] == 'spec' then spec = fields[j + 1] end
    end
    if valid_id(id) and (#fields == 2 or (#fields == 4 and spec)) then
      list[#list + 1] = {e[1], id, spec}
    else
      local raw = {}
      for j = 1, #fields do raw[#raw + 1] = fields[j] end
      bad[#bad + 1] = {e[1], '', 'malformed', string.sub(table.concat(raw, ' '), 1, 512)}
    end
  end
  local out = {}
  -- Not paused: checked above, in this same call.
  if #list > 0 then out = start_checked(p, group, emax, consumer, list, false) end
  for _, b in ipairs(bad) do out[#out + 1] = b end
  return out
end

-- complete: ARGV group, retention_ms, events_maxlen, then per job: id, entry, result, status, n,
-- and n field/value pairs stored with the result (usage, headers, called_ms, cost: dollars at
-- the worker's `[prices]`, which corrects a dollar budget's reservation)
-- -> per job 'completed' | 'refused:<state>'
-- Many jobs per call: a worker sends the completions that arrived while its last call was out.
local function complete(keys, args)
  local p = queue_key(keys)
  local group = name_arg(args[1], 'group')
  local retention = args[2]
  if retention == nil or retention == '' then
    retention = tostring(DEFAULT_RETENTION_MS)
  else
    int(retention, 'retention_ms', 1, MAX_DURATION_MS)
  end
  local emax = maxlen(args[3], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  -- Every job's arguments are checked before the first is completed.
  local jobs = {}
  local i = 4
  while i <= #args do
    if i + 4 > #args then invalid('arguments: a job needs id, entry, result, status, n') end
    local n = int(args[i + 4], 'n', 0, 64)
    if i + 4 + 2 * n > #args then invalid('arguments: fewer than the n field/value pairs said') end
    local id = args[i]
    if not valid_id(id) then invalid('id: ' .. shown(id) .. ' is not a job id') end
    jobs[#jobs + 1] = {i = i, n = n, id = id, entry = entry_id(args[i + 1], 'entry')}
    i = i + 5 + 2 * n
  end
  for _, job in ipairs(jobs) do
    local ok, f = pcall(redis.call, 'HMGET', p .. 'job:' .. job.id, 'state', 'entry', 'hook',
      'cache', 'reserved', 'tenant', 'fair', 'dres', 'bres')
    if ok then job.f = f else job.corrupt = true end
  end
  local _, nows = now_ms()
  local out = {}
  local done, refused, completed, hooked, settled, acks = 0, 0, {}, {}, {}, {}
  local call = {}
  for _, job in ipairs(jobs) do
    local i, n, id, entry = job.i, job.n, job.id, job.entry
    local result, status = args[i + 2], args[i + 3]
    local jk = p .. 'job:' .. id
    local f = job.f or {}
    local state = f[1]
    -- A job key of the wrong type: left pending, so the entry comes back to a worker's start,
    -- which reports it corrupt and has it dead-lettered (never dropped). The others' entries
    -- are acknowledged together below (one XACK for the batch, not one per job).
    if not job.corrupt then acks[#acks + 1] = entry end
    if job.corrupt then
      refused = refused + 1
      out[#out + 1] = 'refused:corrupt'
    -- Fenced by the entry: a holder from an earlier life of the job (its lease lapsed, the job
    -- was retried and runs again under a new entry) cannot complete the later run.
    elseif state ~= 'running' or f[2] ~= entry then
      refused = refused + 1
      out[#out + 1] = 'refused:' .. (state or 'missing')
    else
      -- `entry` (and a tenant's job's `reserved`) is blanked in the same HSET (an HDEL would be
      -- one more command).
      local fields = {'state', 'completed', 'result', result or '', 'status', status or '',
        'finished_ms', nows, 'updated_ms', nows, 'entry', ''}
      if f[5] == '1' then fields[#fields + 1] = 'reserved'; fields[#fields + 1] = '' end
      if f[8] then fields[#fields + 1] = 'dres'; fields[#fields + 1] = '' end
      if f[9] then fields[#fields + 1] = 'bres'; fields[#fields + 1] = '' end
      for j = i + 5, i + 4 + 2 * n do fields[#fields + 1] = args[j] end
      redis.call('HSET', jk, unpack(fields))
      redis.call('PEXPIRE', jk, retention)
      done = done + 1
      completed[done] = id
      out[#out + 1] = 'completed'
      local spec = (f[3] or f[4]) and spec_at(p, jk, entry)
      if f[3] then hooked[#hooked + 1] = {id, spec} end
      local usage, cost = '', nil
      if f[4] or f[5] == '1' then
        for j = i + 5, i + 3 + 2 * n, 2 do
          if args[j] == 'usage' then usage = args[j + 1] elseif args[j] == 'cost' then cost = tonumber(args[j + 1]) end
        end
        -- A cost that is no finite amount counts 0 (HINCRBYFLOAT would refuse the whole call).
        if cost and not (cost == cost and cost > -1e15 and cost < 1e15) then cost = nil end
      end
      if f[5] == '1' then
        local input, output = usage_tokens(usage)
        fair_settle(p, jk, input + output, {f[5], f[6], f[7], f[8], f[9]}, call, true, cost)
      end
      if f[4] then
        settled[#settled + 1] = {id, f[4], result or '', status or '', usage, spec}
      end
    end
  end
  ack_entries(p, group, acks)
  if done > 0 then
    redis.call('HINCRBY', p .. 'counts', 'running', tostring(-done))
    redis.call('HINCRBY', p .. 'counts', 'completed', tostring(done))
  end
  events(p, emax, completed, 'completed')
  for _, h in ipairs(hooked) do hook(p, emax, h[1], h[2]) end
  for _, c in ipairs(settled) do settle(p, emax, c[1], c[2], c[3], c[4], c[5], c[6]) end
  if refused > 0 then
    redis.call('HINCRBY', p .. 'counts', 'refused_completions', tostring(refused))
  end
  return out
end

-- retry: ARGV group, id, entry, delay_ms, class, error, status, spends (1: an attempt, 0: a wait,
-- n: neither — the call was never made), events_maxlen
-- -> {'retrying', due_ms} | {'refused', state}
local function retry(keys, args)
  local p = queue_key(keys)
  at_most(args, 9)
  local group, id, entry = name_arg(args[1], 'group'), args[2], entry_id(args[3], 'entry')
  if not valid_id(id) then invalid('id: ' .. shown(id) .. ' is not a job id') end
  local delay = int(args[4], 'delay_ms', 0, MAX_DELAY_MS)
  local class, err, status = text(args[5], 'class'), text(args[6], 'error'), text(args[7], 'status')
  local spends = args[8]
  if spends ~= '1' and spends ~= '0' and spends ~= 'n' then
    invalid('spends: ' .. shown(spends) .. ' is not 1, 0 or n')
  end
  local emax = maxlen(args[9], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local jk = p .. 'job:' .. id
  local ok, f = pcall(redis.call, 'HMGET', jk, 'state', 'entry')
  -- A job key of the wrong type: left pending (see complete).
  if not ok then return {'refused', 'corrupt'} end
  local state = f[1]
  ack_entry(p, group, entry)
  if state ~= 'running' or f[2] ~= entry then
    return {'refused', state or 'missing'}
  end
  local now = now_ms()
  local due = now + delay
  if spends == '0' or spends == 'n' then redis.call('HINCRBY', jk, 'attempts', -1) end
  if spends == '0' then redis.call('HINCRBY', jk, 'waits', 1) end
  if spends == 'n' then redis.call('HINCRBY', jk, 'total_attempts', -1) end
  keep_spec(p, jk, entry)
  fair_settle(p, jk, 0)
  redis.call('HSET', jk, 'state', 'retrying', 'last_class', class, 'last_error', err,
    'last_status', status, 'run_at_ms', due, 'failed_ms', now, 'updated_ms', now)
  redis.call('HDEL', jk, 'entry')
  redis.call('ZADD', p .. 'delayed', due, id)
  move(p, 'running', 'retrying')
  event(p, emax, id, 'retrying', class)
  return {'retrying', due}
end

-- dead: ARGV group, id, entry, reason, error, status, retention_ms, dead_maxlen, events_maxlen, raw
-- A job whose hash is missing (garbage in the stream) is dead-lettered from `raw` alone.
-- -> {'dead'} | {'refused', state}
local function dead(keys, args)
  local p = queue_key(keys)
  at_most(args, 10)
  local group, id = name_arg(args[1], 'group'), args[2] or ''
  if id ~= '' and not valid_id(id) then invalid('id: ' .. shown(id) .. ' is not a job id') end
  local entry = entry_id(args[3], 'entry', true)
  local reason = text(args[4], 'reason')
  if reason == '' then invalid('reason: missing') end
  local err, status = text(args[5], 'error'), text(args[6], 'status')
  local retention = int(args[7], 'retention_ms', 1, MAX_DURATION_MS, DEFAULT_RETENTION_MS)
  local dmax = maxlen(args[8], 'dead_maxlen', DEFAULT_DEAD_MAXLEN)
  local emax = maxlen(args[9], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local raw = text(args[10], 'raw')
  local now = now_ms()
  local jk = p .. 'job:' .. id
  local f = {}
  if id ~= '' then
    local ok, r = pcall(redis.call, 'HMGET', jk, 'state', 'attempts', 'upstream', 'entry', 'hook',
      'cache')
    if ok then
      f = r
    else
      -- The job key is not a job (wrong type): the entry is dead-lettered from `raw`, the key
      -- left alone for an operator.
      reason, err = 'corrupt', text((type(r) == 'table' and r.err) or tostring(r), 'error')
    end
  end
  local state = f[1]
  ack_entry(p, group, entry)
  if not state then
    redis.call('XADD', p .. 'dead', 'MAXLEN', '~', dmax, '*', 'id', id, 'reason', reason,
      'status', status, 'attempts', 0, 'error', err, 'upstream', '', 'at_ms', now, 'raw', raw)
    redis.call('HINCRBY', p .. 'counts', 'dead', 1)
    return {'dead'}
  end
  -- A worker names the entry it holds: one from an earlier life of the job is refused.
  if terminal(state) or (entry ~= '' and f[4] ~= entry) then
    return {'refused', state}
  end
  if state == 'scheduled' or state == 'retrying' then redis.call('ZREM', p .. 'delayed', id) end
  redis.call('XADD', p .. 'dead', 'MAXLEN', '~', dmax, '*', 'id', id, 'reason', reason,
    'status', status, 'attempts', f[2] or 0, 'error', err, 'upstream', f[3] or '', 'at_ms', now)
  -- Kept for a re-drive (and read by hook and settle below).
  keep_spec(p, jk, f[4])
  fair_settle(p, jk, 0)
  redis.call('HSET', jk, 'state', 'dead', 'dead_reason', reason, 'last_error', err,
    'last_status', status, 'finished_ms', now, 'updated_ms', now)
  redis.call('HDEL', jk, 'entry')
  redis.call('PEXPIRE', jk, retention)
  move(p, state, 'dead')
  event(p, emax, id, 'dead', reason)
  if f[5] then hook(p, emax, id) end
  if f[6] then settle(p, emax, id, f[6]) end
  return {'dead'}
end

-- promote: ARGV limit, events_maxlen, group -> {promoted, next_due_ms or -1, server_now_ms}
-- Also trims acknowledged entries from the ready stream (the scheduler calls this at least
-- every second).
local function promote(keys, args)
  local p = queue_key(keys)
  at_most(args, 3)
  local limit = int(args[1], 'limit', 1, MAX_COUNT, 1000)
  local emax = maxlen(args[2], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  if args[3] and #args[3] > 256 then invalid('group: over 256 bytes') end
  local now = now_ms()
  if args[3] and args[3] ~= '' then trim_acked(p, args[3]) end
  local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, limit)
  local promoted, queued = 0, {}
  for _, id in ipairs(due) do
    redis.call('ZREM', p .. 'delayed', id)
    local jk = p .. 'job:' .. id
    local state = redis.call('HGET', jk, 'state')
    if state == 'scheduled' or state == 'retrying' then
      push_ready(p, jk, id)
      redis.call('HSET', jk, 'state', 'queued', 'updated_ms', now)
      redis.call('HDEL', jk, 'run_at_ms')
      move(p, state, 'queued')
      promoted = promoted + 1
      queued[promoted] = id
    end
  end
  events(p, emax, queued, 'queued')
  local nxt = redis.call('ZRANGE', p .. 'delayed', 0, 0, 'WITHSCORES')
  if nxt[2] then return {promoted, tonumber(nxt[2]), now} end
  return {promoted, -1, now}
end

-- release: ARGV group, events_maxlen, then pairs (entry, id) -> released
-- Hands running jobs back at shutdown: the entry is acked and deleted, the job queued again
-- with a new entry, and the unfinished attempt not counted.
local function release(keys, args)
  local p = queue_key(keys)
  local group = name_arg(args[1], 'group')
  local emax = maxlen(args[2], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  local list = pairs_from(args, 3)
  local now = now_ms()
  local released = 0
  for _, pair in ipairs(list) do
    local entry, id = pair[1], pair[2]
    local jk = p .. 'job:' .. id
    local f = redis.call('HMGET', jk, 'state', 'entry', 'spec')
    if f[1] == 'running' and f[2] == entry then
      ack_entry(p, group, entry)
      redis.call('HINCRBY', jk, 'attempts', -1)
      redis.call('HINCRBY', jk, 'total_attempts', -1)
      push_ready(p, jk, id, not f[3] and entry_spec(p, entry) or nil)
      redis.call('HSET', jk, 'state', 'queued', 'updated_ms', now)
      move(p, 'running', 'queued')
      event(p, emax, id, 'queued', 'released')
      released = released + 1
    end
  end
  return released
end

-- beat: ARGV consumer -> the server's clock (ms)
-- A worker's liveness on this queue: `beats` maps each consumer to its last beat (server ms). Every
-- worker beats about once a second; `takeover` takes the entries of a consumer whose beats stopped.
local function beat(keys, args)
  local p = queue_key(keys)
  at_most(args, 1)
  local consumer = name_arg(args[1], 'consumer')
  local now, nows = now_ms()
  redis.call('HSET', p .. 'beats', consumer, nows)
  return now
end

-- leave: ARGV group, consumer -> 1 when the consumer was forgotten, 0 when it still owns entries
-- A worker stopping cleanly (its unfinished entries handed back) leaves: its beat goes and, if
-- nothing is pending for it, its consumer in the group, so `sluice stats` stops counting it.
-- A consumer that still owns entries keeps them (DELCONSUMER would drop them from the pending
-- list, where nobody could take them over); takeover forgets it once they are taken.
local function leave(keys, args)
  local p = queue_key(keys)
  at_most(args, 2)
  local group, consumer = name_arg(args[1], 'group'), name_arg(args[2], 'consumer')
  local lanes = {}
  for _, lane in ipairs(LANES) do
    local stream = lane_stream(p, lane)
    local ok, pending = pcall(redis.call, 'XPENDING', stream, group, '-', '+', 1, consumer)
    -- A lane without a group (never used) holds nothing of this consumer.
    if ok then
      if #pending > 0 then
        redis.call('HDEL', p .. 'beats', consumer)
        return 0
      end
      lanes[#lanes + 1] = stream
    elseif lane == '' then
      return 0
    end
  end
  redis.call('HDEL', p .. 'beats', consumer)
  for _, stream in ipairs(lanes) do
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  end
  return 1
end

-- takeover: ARGV group, consumer (the taker), dead_after_ms, count
-- -> {{entry, {field, value, ...}, deliveries}, ...}: up to `count` pending entries of consumers
-- whose last beat is more than dead_after_ms old, now the taker's (XCLAIM: their idle time
-- reset, their delivery count raised). A consumer that never beat (a worker of an older
-- version) is left to the lease. A dead consumer with nothing left pending is forgotten.
-- The consumers of one lane's group: name -> pending, or nil without the group.
local function lane_consumers(stream, group)
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
  if not ok then return nil end
  local out = {}
  for _, c in ipairs(consumers) do
    local name, pending = nil, 0
    for j = 1, #c, 2 do
      if c[j] == 'name' then name = c[j + 1] elseif c[j] == 'pending' then pending = c[j + 1] end
    end
    if name then out[name] = pending end
  end
  return out
end

local function takeover(keys, args)
  local p = queue_key(keys)
  at_most(args, 4)
  local group, me = name_arg(args[1], 'group'), name_arg(args[2], 'consumer')
  local dead_after = int(args[3], 'dead_after_ms', 1, MAX_DURATION_MS)
  local count = int(args[4], 'count', 1, MAX_COUNT)
  local now = now_ms()
  local lanes = {}
  for _, lane in ipairs(LANES) do
    local consumers = lane_consumers(lane_stream(p, lane), group)
    if consumers then lanes[#lanes + 1] = {lane, consumers} end
  end
  if #lanes == 0 then return {} end
  -- Every consumer that any lane knows, with its pending entries in each.
  local names, seen = {}, {}
  for _, l in ipairs(lanes) do
    for name in pairs(l[2]) do
      if not seen[name] then seen[name] = true; names[#names + 1] = name end
    end
  end
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local last = name ~= me and tonumber(redis.call('HGET', p .. 'beats', name) or '')
    if last and now - last > dead_after then
      local left = 0
      for _, l in ipairs(lanes) do
        local lane, stream = l[1], lane_stream(p, l[1])
        local pending = l[2][name] or 0
        local room = count - #out
        if pending > 0 and room > 0 then
          local rows = redis.call('XPENDING', stream, group, '-', '+', room, name)
          local ids, deliveries = {}, {}
          for _, r in ipairs(rows) do
            ids[#ids + 1] = r[1]
            deliveries[r[1]] = r[4] + 1
          end
          if #ids > 0 then
            -- An entry deleted from the stream meanwhile comes back as nil (false here), or not
            -- at all; Redis drops it from the pending list either way.
            for _, e in ipairs(redis.call('XCLAIM', stream, group, me, 0, unpack(ids))) do
              if type(e) == 'table' then
                out[#out + 1] = {lane_entry(lane, e[1]), e[2], deliveries[e[1]] or 1}
              end
            end
          end
          left = left + pending - #rows
        else
          left = left + pending
        end
      end
      if left <= 0 then redis.call('HDEL', p .. 'beats', name) end
    end
  end
  return out
end

-- ==== store/limits.rs: admit, report ====

-- GCRA with reservation: the caller may start after `wait` ms; the bucket is charged `cost`
-- intervals (charged after, so one large request never waits for more than the burst).
-- GCRA weighted by cost, as a token bucket of `tau` ms of the rate: a call of `cost_ms` (its
-- tokens × the interval) may start once the bucket holds all of it, i.e. at
-- tat + cost_ms - tau; the bucket's theoretical arrival time then moves on by cost_ms.
local function gcra_wait(key, cost_ms, tau, now)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local wait = tat + cost_ms - tau - now
  if wait < 0 then wait = 0 end
  return tat, wait
end

-- Adaptive mode (AIMD): the fleet's request rate lives in `adaptive` {rate, at}. It starts at half
-- the ceiling, grows by 1% of itself per busy second (never above the ceiling), is cut to 85% on a
-- 429 (at most once a second, see `report`), and restarts at half after a minute idle, so an
-- unknown or changing quota is followed without sudden acceleration.
local function adaptive_rate(p, ceiling, floor, now)
  local a = redis.call('HMGET', p .. 'adaptive', 'rate', 'at')
  local rate, at = tonumber(a[1] or '0'), tonumber(a[2] or '0')
  if rate <= 0 then
    rate = ceiling / 2
  elseif now - at > 60000 then
    rate = rate / 2
  else
    rate = rate * (1 + 0.01 * math.min(now - at, 1000) / 1000)
  end
  rate = math.max(floor, math.min(ceiling, rate))
  redis.call('HSET', p .. 'adaptive', 'rate', string.format('%.3f', rate), 'at', now)
  return rate
end

-- admit: ARGV rpm, tpm, tokens, burst_ms, horizon_ms, probe_ms, model, model_rpm, model_tpm,
-- adaptive (1|0: rpm is then the ceiling), token_burst_ms (the token buckets' burst window)
-- -> {wait_ms, 'ok'} (reserved: start after wait) | {0, 'probe'} | {0, 'probe_auth'} (probe with
--    the upstream's cheap request: the circuit was opened by a 401/403) |
--    {wait_ms, 'hold'|'open'|'half_open'|'busy'}
local MAX_RATE = 1000000000 -- requests or tokens per minute

local function model_arg(v)
  v = v or ''
  if #v > 256 or string.find(v, '[{}%s]') then invalid('model: ' .. shown(v) .. ' is not a model name') end
  return v
end

local function admit(keys, args)
  local p = upstream_key(keys)
  at_most(args, 12)
  local rpm, tpm = int(args[1], 'rpm', 0, MAX_RATE, 0), int(args[2], 'tpm', 0, MAX_RATE, 0)
  local tokens = int(args[3], 'tokens', 0, MAX_RATE, 1)
  local burst = int(args[4], 'burst_ms', 0, MAX_DURATION_MS, 50)
  local horizon = int(args[5], 'horizon_ms', 0, MAX_DURATION_MS, 1000)
  local probe_ms = int(args[6], 'probe_ms', 1, MAX_DURATION_MS, 60000)
  local model = model_arg(args[7])
  local mrpm, mtpm = int(args[8], 'model_rpm', 0, MAX_RATE, 0), int(args[9], 'model_tpm', 0, MAX_RATE, 0)
  if args[10] and args[10] ~= '' and args[10] ~= '0' and args[10] ~= '1' then
    invalid('adaptive: ' .. shown(args[10]) .. ' is not 1 or 0')
  end
  local token_burst = int(args[11], 'token_burst_ms', 0, MAX_DURATION_MS, burst)
  -- A call that is not `high` where a share is reserved for high ones: it also takes from the
  -- buckets of the rest, `shared:rpm` and `shared:tpm`, at (100 - reserve_pct)% of the rates.
  local reserve = int(args[12], 'reserve_pct', 0, 99, 0)
  local now = now_ms()
  if args[10] == '1' and rpm > 0 then rpm = adaptive_rate(p, rpm, math.max(1, rpm / 100), now) end
  local hold = tonumber(redis.call('GET', p .. 'hold') or '0')
  if hold > now then return {hold - now, 'hold'} end
  local c = redis.call('HMGET', p .. 'circuit', 'state', 'until')
  if c[1] == 'open' then
    local untl = tonumber(c[2] or '0')
    if untl > now then return {untl - now, 'open'} end
    if redis.call('SET', p .. 'probe', '1', 'NX', 'PX', probe_ms) then
      -- Opened by a 401/403: the probe is the upstream's cheap request, not a job's.
      if redis.call('HGET', p .. 'circuit', 'reason') == 'auth' then return {0, 'probe_auth'} end
      return {0, 'probe'}
    end
    return {math.min(probe_ms, 1000), 'half_open'}
  end
  -- Token buckets run as full as the provider's own (a call waits until its tokens are there),
  -- so JITTER_MS of the rate stays in reserve for calls that reach the provider closer together
  -- than their slots were.
  local tburst = math.max(token_burst - JITTER_MS, 0)
  local buckets = {}
  if rpm > 0 then buckets[#buckets + 1] = {p .. 'rpm', 60000 / rpm, 1, burst} end
  if tpm > 0 then buckets[#buckets + 1] = {p .. 'tpm', 60000 / tpm, tokens, tburst} end
  if model ~= '' and mrpm > 0 then buckets[#buckets + 1] = {p .. 'm:' .. model .. ':rpm', 60000 / mrpm, 1, burst} end
  if model ~= '' and mtpm > 0 then buckets[#buckets + 1] = {p .. 'm:' .. model .. ':tpm', 60000 / mtpm, tokens, tburst} end
  if reserve > 0 then
    local share = (100 - reserve) / 100
    if rpm > 0 then buckets[#buckets + 1] = {p .. 'shared:rpm', 60000 / (rpm * share), 1, burst} end
    if tpm > 0 then buckets[#buckets + 1] = {p .. 'shared:tpm', 60000 / (tpm * share), tokens, tburst} end
  end
  local wait = 0
  local tats = {}
  for i, b in ipairs(buckets) do
    -- The burst window holds b[4] ms of the rate (never less than one request's interval).
    local tat, w = gcra_wait(b[1], b[2] * b[3], math.max(b[4], b[2]), now)
    tats[i] = tat
    if w > wait then wait = w end
  end
  if wait > horizon then return {wait, 'busy'} end
  for i, b in ipairs(buckets) do
    local new_tat = tats[i] + b[2] * b[3]
    local ttl = math.floor(new_tat - now) + 60000
    redis.call('SET', b[1], string.format('%.3f', new_tat), 'PX', ttl)
    -- A token reservation whose call is still ahead is "pending": the provider has not seen it,
    -- so a refund cannot be banked against it (see report).
    if wait > 0 and b[3] > 1 then
      redis.call('ZADD', b[1] .. ':pending', now + wait, string.format('%.3f:%.3f', new_tat, b[2] * b[3]))
      redis.call('PEXPIRE', b[1] .. ':pending', ttl)
    end
  end
  return {wait, 'ok'}
end

-- report: ARGV kind ('ok'|'probe_ok'|'probe_fail'|'soft'|'hard'|'auth'|'limited'|'none'), hold_for_ms,
-- cooloff_ms, min_calls, window_ms, tpm, delta_tokens, model, model_tpm, ok_calls, failure_pct
-- -> state ('closed'|'opened'|'')
-- The circuit opens on 'auth' (401/403) or 'hard' (quota) when closed, on a failed probe, or when at least
-- `failure_pct` percent of at least `min_calls` calls in the window failed transiently: a failure rate, not a
-- run, so an upstream whose retries succeed is not cut off. `ok_calls` are the reporting
-- worker's successes since its last report (successes alone are not reported, to save a round
-- trip per call; they come with the next report).
local REPORT_KINDS = {ok = true, probe_ok = true, probe_fail = true, soft = true, hard = true,
  auth = true, limited = true, none = true}

local function report(keys, args)
  local p = upstream_key(keys)
  at_most(args, 11)
  local kind = args[1]
  if not REPORT_KINDS[kind or ''] then invalid('kind: ' .. shown(kind) .. ' is not a report kind') end
  local hold_for = int(args[2], 'hold_for_ms', 0, MAX_DELAY_MS, 0)
  local cooloff = int(args[3], 'cooloff_ms', 1, MAX_DURATION_MS, 30000)
  local min_calls = int(args[4], 'min_calls', 1, MAX_COUNT, 20)
  local window = int(args[5], 'window_ms', 1, MAX_DURATION_MS, 10000)
  local tpm = int(args[6], 'tpm', 0, MAX_RATE, 0)
  local delta = int(args[7], 'delta_tokens', -MAX_RATE, MAX_RATE, 0)
  local model, mtpm = model_arg(args[8]), int(args[9], 'model_tpm', 0, MAX_RATE, 0)
  local oks = int(args[10], 'ok_calls', 0, MAX_RATE, 0)
  local failure_pct = int(args[11], 'failure_pct', 1, 100, 50)
  local now = now_ms()
  local hold_until = now + hold_for
  if hold_for > 0 then
    local cur = tonumber(redis.call('GET', p .. 'hold') or '0')
    if hold_until > cur then redis.call('SET', p .. 'hold', hold_until, 'PX', hold_until - now) end
  end
  if delta ~= 0 then
    local function adjust(key, rate)
      local tat = tonumber(redis.call('GET', key) or '0')
      if rate > 0 and tat > 0 then
        -- A refund is banked as the provider banks it: its bucket is full when everything it has
        -- been sent is paid for, so the arrival time never moves back past now plus the
        -- reservations whose calls are still ahead (capacity in the past is not banked).
        local pk = key .. ':pending'
        redis.call('ZREMRANGEBYSCORE', pk, '-inf', now)
        local pending = 0
        for _, m in ipairs(redis.call('ZRANGE', pk, 0, -1)) do
          pending = pending + (tonumber(string.match(m, ':([%d%.]+)$')) or 0)
        end
        local new_tat = math.max(now + pending, tat + (60000 / rate) * delta)
        redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.floor(new_tat - now) + 60000)
      end
    end
    adjust(p .. 'tpm', tpm)
    if model ~= '' then adjust(p .. 'm:' .. model .. ':tpm', mtpm) end
  end
  -- `reason` (auth, quota, failures) is kept across failed probes: it chooses the next probe.
  local function open(reason)
    redis.call('HSET', p .. 'circuit', 'state', 'open', 'until', now + cooloff, 'opened_ms', now)
    if reason then redis.call('HSET', p .. 'circuit', 'reason', reason) end
    redis.call('HINCRBY', p .. 'circuit', 'opens', 1)
    redis.call('DEL', p .. 'probe', p .. 'window')
    return 'opened'
  end
  -- Counts calls (and failures) in the window; the window starts with its first call.
  local function tally(calls, fails)
    local w = p .. 'window'
    local n = redis.call('HINCRBY', w, 'calls', calls)
    local f = tonumber(redis.call('HGET', w, 'fails') or '0')
    if fails > 0 then f = redis.call('HINCRBY', w, 'fails', fails) end
    if n == calls then redis.call('PEXPIRE', w, window) end
    return n, f
  end
  if kind == 'auth' or kind == 'hard' then
    local reason = kind == 'auth' and 'auth' or 'quota'
    -- Already open: a call admitted before it opened failing late. It is not a new open (the
    -- count stays one per opening, the cool-off is not stretched), but its reason chooses the
    -- next probe (a 401 after a run of 503s makes it the cheap request).
    if redis.call('HGET', p .. 'circuit', 'state') == 'open' then
      redis.call('HSET', p .. 'circuit', 'reason', reason)
      return ''
    end
    return open(reason)
  end
  if kind == 'probe_fail' then return open() end
  if kind == 'probe_ok' then
    redis.call('DEL', p .. 'circuit', p .. 'probe', p .. 'window')
    return 'closed'
  end
  if kind == 'soft' then
    local n, f = tally(oks + 1, 1)
    -- An open circuit (a call admitted before it opened failing late) is not opened again.
    if n >= min_calls and f * 100 >= failure_pct * n
      and redis.call('HGET', p .. 'circuit', 'state') ~= 'open' then
      return open('failures')
    end
    return ''
  end
  if oks > 0 then tally(oks, 0) end
  if kind == 'limited' then
    -- Multiplicative decrease, once per second however many 429s a burst brings.
    if redis.call('SET', p .. 'cut', '1', 'NX', 'PX', 1000) then
      local rate = tonumber(redis.call('HGET', p .. 'adaptive', 'rate') or '0')
      if rate > 0 then
        redis.call('HSET', p .. 'adaptive', 'rate', string.format('%.3f', math.max(1, rate * 0.85)))
      end
    end
    return ''
  end
  return ''
end

-- ==== store/admin.rs: redrive, purge ====

-- redrive: ARGV events_maxlen, then dead-stream entry ids -> {redriven, kept, skipped}
-- Only re-driven entries leave the dead stream; the others stay until `purge`.
-- Attempts restart at 0; what happened before is kept in `history` and `total_attempts`.
local function redrive(keys, args)
  local p = queue_key(keys)
  local emax = maxlen(args[1], 'events_maxlen', DEFAULT_EVENTS_MAXLEN)
  for i = 2, #args do entry_id(args[i], 'dead entry', false, true) end
  local now = now_ms()
  local redriven, kept, skipped = 0, 0, 0
  for i = 2, #args do
    local rows = redis.call('XRANGE', p .. 'dead', args[i], args[i])
    if #rows == 0 then
      skipped = skipped + 1
    else
      local fields = {}
      local kv = rows[1][2]
      for j = 1, #kv, 2 do fields[kv[j]] = kv[j + 1] end
      local id = fields['id'] or ''
      local jk = p .. 'job:' .. id
      local state = nil
      if id ~= '' then state = redis.call('HGET', jk, 'state') end
      if state == 'dead' then
        local line = now .. ' redriven after ' .. (fields['attempts'] or '?') .. ' attempts, dead ('
          .. (fields['reason'] or '') .. '): ' .. (fields['error'] or '') .. '\n'
        local history = (redis.call('HGET', jk, 'history') or '') .. line
        if #history > HISTORY_MAX then history = string.sub(history, #history - HISTORY_MAX + 1) end
        redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'history', history, 'updated_ms', now)
        redis.call('HINCRBY', jk, 'redrives', 1)
        redis.call('HDEL', jk, 'finished_ms', 'dead_reason')
        redis.call('PERSIST', jk)
        push_ready(p, jk, id)
        move(p, nil, 'queued')
        redis.call('HINCRBY', p .. 'counts', 'redriven', 1)
        event(p, emax, id, 'queued', 'redrive')
        redriven = redriven + 1
        redis.call('XDEL', p .. 'dead', args[i])
      elseif state == nil then
        -- No job hash (a raw dead letter, or one whose hash expired): nothing to re-drive, and
        -- the dead letter is all that is left of it: kept until `purge`.
        kept = kept + 1
      else
        -- The job lives on (re-driven already, or enqueued again): its dead letter is history.
        skipped = skipped + 1
      end
    end
  end
  return {redriven, kept, skipped}
end

-- purge: ARGV dead-stream entry ids -> removed
-- Removes the entries and the hashes of the jobs that are still dead.
local function purge(keys, args)
  local p = queue_key(keys)
  for i = 1, #args do entry_id(args[i], 'dead entry', false, true) end
  local removed = 0
  for i = 1, #args do
    local rows = redis.call('XRANGE', p .. 'dead', args[i], args[i])
    if #rows > 0 then
      local kv = rows[1][2]
      for j = 1, #kv, 2 do
        if kv[j] == 'id' and kv[j + 1] ~= '' then
          local jk = p .. 'job:' .. kv[j + 1]
          if redis.call('HGET', jk, 'state') == 'dead' then redis.call('DEL', jk) end
        end
      end
      removed = removed + redis.call('XDEL', p .. 'dead', args[i])
    end
  end
  return removed
end


-- tenant: ARGV tenant, then field/value pairs: `weight` (a number > 0, '' for the default 1),
-- `budget` (tokens per period, '' or 0 for none), `dollars` (dollars per period, '' or 0 for
-- none), `period` (`day` or `month`, the default)
-- -> {weight, budget (0: none), period, spent this period, parked (0|1), backlog,
--     dollars (0: none), dollars spent this period, prices known (0|1)}
-- A parked tenant goes back in turn (fair_fill parks it again if its next job still does not
-- fit), so raising its budget resumes its jobs.
local function tenant_set(keys, args)
  local p = queue_key(keys)
  local t = args[1]
  if type(t) ~= 'string' or #t == 0 or #t > 64 or not string.match(t, '^[%w_%.:@%-]+$') then
    invalid('tenant: ' .. shown(t) .. ' is not 1 to 64 of [A-Za-z0-9_.:@-]')
  end
  if (#args - 1) % 2 ~= 0 then invalid('arguments: field/value pairs are ragged') end
  local set = {}
  for i = 2, #args, 2 do
    local k, v = args[i], args[i + 1]
    if k == 'weight' then
      local w = tonumber(v)
      if v ~= '' and (not w or w <= 0 or w > 1000000 or not string.match(v, '^[%d%.]+$')) then
        invalid('weight: ' .. shown(v) .. ' is not a number above 0, at most 1000000')
      end
    elseif k == 'budget' then
      int(v, 'budget', 0, 1000000000000000, 0)
    elseif k == 'dollars' then
      local d = tonumber(v)
      if v ~= '' and (not d or d < 0 or d > 1000000000000 or not string.match(v, '^[%d%.]+$')) then
        invalid('dollars: ' .. shown(v) .. ' is not a number from 0 to 1000000000000')
      end
    elseif k == 'period' then
      if v ~= 'day' and v ~= 'month' then invalid('period: ' .. shown(v) .. ' is not day or month') end
    else
      invalid('field: ' .. shown(k) .. ' is not weight, budget, dollars or period')
    end
    set[k] = v
  end
  if set.weight == '' then
    redis.call('HDEL', p .. 'weights', t)
  elseif set.weight then
    redis.call('HSET', p .. 'weights', t, set.weight)
  end
  local bk = p .. 'budget:' .. t
  -- Tokens (`tokens`) and dollars (`dollars`) are limits of one budget: the hash goes with the
  -- last of them.
  for _, limit in ipairs({{'budget', 'tokens'}, {'dollars', 'dollars'}}) do
    local v = set[limit[1]]
    if v and (v == '' or tonumber(v) == 0) then
      redis.call('HDEL', bk, limit[2])
    elseif v then
      -- A budget created anew gets a new generation (`gen`): reservations made under an
      -- earlier one are not taken back from it.
      if redis.call('EXISTS', bk) == 0 then
        redis.call('HSET', bk, 'gen', redis.call('INCR', p .. 'budgetgen'))
      end
      redis.call('HSET', bk, limit[2], v)
      redis.call('SADD', p .. 'budgets', t)
      if not set.period and not redis.call('HGET', bk, 'period') then set.period = 'month' end
    end
  end
  local limits = redis.call('HMGET', bk, 'tokens', 'dollars')
  if not limits[1] and not limits[2] then
    redis.call('DEL', bk)
    redis.call('SREM', p .. 'budgets', t)
  end
  if set.period and redis.call('EXISTS', bk) == 1 then redis.call('HSET', bk, 'period', set.period) end
  if redis.call('SREM', p .. 'parked', t) == 1 then
    activate(p, t)
    fair_top_up(p, DEFAULT_AGING_MS)
  end
  local b = budget_now(p, t, now_ms()) or {spent = 0, dspent = 0}
  local backlog = 0
  for _, lane in ipairs(LANES) do backlog = backlog + redis.call('LLEN', tq(p, t, lane)) end
  return {redis.call('HGET', p .. 'weights', t) or '1', b.tokens or 0,
    redis.call('HGET', bk, 'period') or '', b.spent, redis.call('SISMEMBER', p .. 'parked', t), backlog,
    dollars(b.dollars or 0), dollars(b.dspent), redis.call('EXISTS', p .. 'prices')}
end

-- prices: ARGV model, input, output per million tokens, repeated (none: no prices)
-- -> the number of models priced. The queue's `prices` becomes exactly these (a worker publishes
-- its `[prices]` at start; dollar budgets reserve at them). `*` prices every model not named.
local function prices(keys, args)
  local p = queue_key(keys)
  if #args % 3 ~= 0 or #args > 3 * 1000 then
    invalid('arguments: model, input, output per million tokens, repeated (at most 1000)')
  end
  local set = {}
  for i = 1, #args, 3 do
    local model = args[i]
    if type(model) ~= 'string' or #model == 0 or #model > 256 or string.find(model, ' ') then
      invalid('model: ' .. shown(model) .. ' is not 1 to 256 characters without spaces')
    end
    for k = 1, 2 do
      local v = tonumber(args[i + k])
      if not v or v < 0 or v > 1000000000 or v ~= v then
        invalid('price: ' .. shown(args[i + k]) .. ' is not a number from 0 to 1000000000')
      end
    end
    -- Stored as Lua prints the numbers: no spaces, whatever spelling the caller used.
    set[#set + 1] = model
    set[#set + 1] = tostring(tonumber(args[i + 1])) .. ' ' .. tostring(tonumber(args[i + 2]))
  end
  redis.call('DEL', p .. 'prices')
  if #set > 0 then redis.call('HSET', p .. 'prices', unpack(set)) end
  return #set / 2
end


--[[ Upstream limits, fleet-wide. Each upstream's keys share the prefix `sluice:{u:NAME}:`:
  `rpm` / `tpm` (and `m:<model>:rpm|tpm`): GCRA theoretical arrival times (ms);
  `hold`: Unix ms until which the provider asked everyone to wait;
  `circuit`: hash {state = open, until = ms} while the circuit is open; `probe`: the one
  half-open call in flight; `window`: hash {calls, fails} of the current failure-rate window.
]]

-- cache_purge: ARGV upstream ('' for every entry), offset, limit
-- -> {deleted, next offset or -1}: looks at `limit` entries of the cache's index from `offset`
-- and deletes those of `upstream`; the caller goes on from the next offset until -1.
local function cache_purge(keys, args)
  local p = queue_key(keys)
  at_most(args, 3)
  local upstream = text(args[1], 'upstream')
  local offset = int(args[2], 'offset', 0, MAX_COUNT * 1000, 0)
  local limit = int(args[3], 'limit', 1, MAX_COUNT, 1000)
  local page = redis.call('ZRANGE', p .. 'cache:index', offset, offset + limit - 1)
  local deleted = 0
  for _, k in ipairs(page) do
    local ck = p .. 'cache:' .. k
    if upstream == '' or redis.call('HGET', ck, 'upstream') == upstream then
      redis.call('DEL', ck)
      cache_forget(p, k)
      deleted = deleted + 1
    end
  end
  if #page < limit then return {deleted, -1} end
  return {deleted, offset + #page - deleted}
end

-- ==== registration ====

-- Replies a refusal raised anywhere in `f` as `<kind> <why>`; any other error is raised again
-- as it was (a Redis command's error, say WRONGTYPE).
local function guarded(f)
  return function(keys, args)
    fair_pushed = false
    local ok, r = pcall(f, keys, args)
    if ok then
      -- Tenanted jobs went back to their lists (push_ready): the window is topped up now that
      -- their states are written.
      if fair_pushed then
        fair_pushed = false
        fair_top_up(keys[1], DEFAULT_AGING_MS)
      end
      return r
    end
    if type(r) == 'table' and r.sluice then return redis.error_reply(r.sluice) end
    -- A Lua runtime error (a string, `user_function:50: …`) is a defect of this library: it gets
    -- a stable code of its own rather than a position in the source.
    if type(r) == 'string' then return redis.error_reply('SLUICE_BUG ' .. r) end
    error(r, 0)
  end
end

redis.register_function{function_name = 'sluice_version', callback = function() return VERSION end,
  flags = {'no-writes'}}
redis.register_function('sluice_enqueue', guarded(enqueue))
redis.register_function{function_name = 'sluice_jobs', callback = guarded(jobs), flags = {'no-writes'}}
redis.register_function('sluice_enqueue_many', guarded(enqueue_many))
-- Only callers that may acknowledge the stream (workers, operators) may run `f`.
local function worker_only(f)
  return guarded(function(keys, args)
    if type(keys[1]) ~= 'string' then invalid('keys: exactly one expected') end
    if not redis.acl_check_cmd('XACK', keys[1] .. 'stream', 'sluice', '0-0') then
      refuse('SLUICE_DENIED', 'this Redis user may not run workers\' functions (it lacks XACK)')
    end
    return f(keys, args)
  end)
end

redis.register_function('sluice_start', worker_only(start))
redis.register_function('sluice_fetch', worker_only(fetch))
redis.register_function('sluice_complete', worker_only(complete))
redis.register_function('sluice_retry', worker_only(retry))
redis.register_function('sluice_dead', worker_only(dead))
redis.register_function('sluice_promote', worker_only(promote))
redis.register_function('sluice_cancel', worker_only(cancel))
redis.register_function('sluice_release', worker_only(release))
redis.register_function('sluice_beat', worker_only(beat))
redis.register_function('sluice_takeover', worker_only(takeover))
redis.register_function('sluice_leave', worker_only(leave))
redis.register_function('sluice_admit', worker_only(admit))
redis.register_function('sluice_report', worker_only(report))
redis.register_function('sluice_redrive', worker_only(redrive))
redis.register_function('sluice_purge', worker_only(purge))
redis.register_function('sluice_tenant', worker_only(tenant_set))
redis.register_function('sluice_prices', worker_only(prices))
redis.register_function('sluice_cache_purge', worker_only(cache_purge))
