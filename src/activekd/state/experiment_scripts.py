"""Lua scripts of the experiment state machine (see ``activekd.state.experiments``).

Every script touches only keys of one experiment (one hash tag, so one Redis Cluster slot), all
passed in KEYS. Each returns a flat array whose first element is a status word; the Python side
maps the words to domain errors. Times come from the server clock (``TIME``) so events from
several drivers order consistently.
"""

from __future__ import annotations

EVENTS_MAXLEN = 10000

_COMMON = f"""
local function now_str()
  local t = redis.call('TIME')
  return string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
end
local function event(key, exp, round, state, version, now, message, kind, from_state)
  redis.call('XADD', key, 'MAXLEN', '~', '{EVENTS_MAXLEN}', '*',
    'experiment_id', exp, 'round', tostring(round), 'state', state,
    'version', tostring(version), 'unix_time', now, 'message', message,
    'kind', kind, 'from_state', from_state)
end
local function head(list, n)
  local out = {{}}
  for i = 1, math.min(#list, n) do out[i] = list[i] end
  return out
end
"""

CREATE = (
    _COMMON
    + """
-- KEYS: 1 meta, 2 labels, 3 label order, 4 picked, 5 round-0 record, 6 round-0 pending, 7 events
-- ARGV: 1 id, 2 spec json, 3 num_rounds, 4 budget, 5 num_classes, 6 pool_size, 7 created_unix,
--       8 message, 9 n, then n item ids, then n labels
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local now = now_str()
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local n = tonumber(ARGV[9])
for i = 1, n do
  redis.call('HSET', KEYS[2], ARGV[9 + i], ARGV[9 + n + i])
  redis.call('RPUSH', KEYS[3], ARGV[9 + i])
end
redis.call('HSET', KEYS[1], 'experiment_id', ARGV[1], 'spec', ARGV[2], 'num_rounds', ARGV[3],
  'budget', ARGV[4], 'num_classes', ARGV[5], 'pool_size', ARGV[6], 'created_unix', ARGV[7],
  'updated_unix', now, 'state', 'CREATED', 'round', '0', 'version', '1')
redis.call('HSET', KEYS[5], 'round', '0', 'state', 'CREATED', 'labeled_count', tostring(n),
  'state_times.CREATED', now)
event(KEYS[7], ARGV[1], 0, 'CREATED', 1, now, ARGV[8], 'created', '')
return {'ok', now}
"""
)

ADVANCE = (
    _COMMON
    + """
-- KEYS: 1 meta, 2 labels, 3 picked, 4 record r, 5 pending r, 6 events, 7 record r+1, 8 pending r+1,
--       9 corrections, 10 label order
-- ARGV: 1 id, 2 round read by the caller, 3 from, 4 to, 5 expected version ('' = any),
--       6 message, 7 nf, then nf field/value pairs, then ns, then ns selected ids
local meta = redis.call('HMGET', KEYS[1], 'state', 'round', 'version', 'budget', 'pool_size')
if not meta[1] then return {'not_found'} end
local state, round, version = meta[1], tonumber(meta[2]), tonumber(meta[3])
if round ~= tonumber(ARGV[2]) or state ~= ARGV[3] then
  return {'aborted', state, tostring(round), tostring(version)}
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= version then
  return {'version', state, tostring(round), tostring(version)}
end
local to = ARGV[4]
local nf = tonumber(ARGV[7])
local sel_at = 8 + 2 * nf
local ns = tonumber(ARGV[sel_at])
if to == 'SELECTED' then
  local bad = {}
  for i = 1, ns do
    local id = ARGV[sel_at + i]
    if redis.call('HEXISTS', KEYS[2], id) == 1 or redis.call('SISMEMBER', KEYS[3], id) == 1 then
      bad[#bad + 1] = id
    end
  end
  if #bad > 0 then return {'reselect', tostring(#bad), cjson.encode(head(bad, 20))} end
  local budget, pool_size = tonumber(meta[4]), tonumber(meta[5])
  local unlabeled = -1
  local need = budget
  if pool_size > 0 then
    unlabeled = math.max(pool_size - redis.call('HLEN', KEYS[2]), 0)
    need = math.min(budget, unlabeled)
    if ns ~= need then return {'count', tostring(need), tostring(unlabeled)} end
  elseif ns > budget then
    return {'count', tostring(need), tostring(unlabeled)}
  end
end
if to == 'LABELS_COMPLETE' then
  local pending = redis.call('SCARD', KEYS[5])
  if pending > 0 then return {'pending', tostring(pending)} end
end
local now = now_str()
version = version + 1
local new_round = round
local rec = KEYS[4]
local corrected = 0
if to == 'AWAITING_LABELS' or to == 'CREATED' then
  local corr = redis.call('HGETALL', KEYS[9])
  for i = 1, #corr, 2 do
    if corr[i + 1] == '-1' then
      redis.call('HDEL', KEYS[2], corr[i])
      redis.call('LREM', KEYS[10], 0, corr[i])
    else
      redis.call('HSET', KEYS[2], corr[i], corr[i + 1])
    end
  end
  corrected = #corr / 2
  redis.call('DEL', KEYS[9])
end
if to == 'CREATED' then
  new_round = round + 1
  rec = KEYS[7]
  redis.call('DEL', KEYS[7], KEYS[8])
  redis.call('HSET', rec, 'round', tostring(new_round),
    'labeled_count', tostring(redis.call('HLEN', KEYS[2])))
end
redis.call('HSET', KEYS[1], 'state', to, 'round', tostring(new_round),
  'version', tostring(version), 'updated_unix', now)
for i = 0, nf - 1 do redis.call('HSET', rec, ARGV[8 + 2 * i], ARGV[9 + 2 * i]) end
redis.call('HSET', rec, 'state', to, 'state_times.' .. to, now)
if to == 'SELECTED' then
  redis.call('DEL', KEYS[5])
  for i = 1, ns do
    redis.call('SADD', KEYS[3], ARGV[sel_at + i])
    redis.call('SADD', KEYS[5], ARGV[sel_at + i])
  end
end
local message = ARGV[6]
if corrected > 0 then
  redis.call('HINCRBY', rec, 'extra.corrections_applied', corrected)
  message = message .. string.format(' (%d label correction(s) applied)', corrected)
end
event(KEYS[6], ARGV[1], new_round, to, version, now, message, 'transition', ARGV[3])
return {'ok', tostring(version), now}
"""
)

SUBMIT_LABELS = (
    _COMMON
    + """
-- KEYS: 1 meta, 2 labels, 3 label order, 4 pending r, 5 record r, 6 events, 7 corrections
-- ARGV: 1 id, 2 round read by the caller, 3 overwrite ('1'/'0'), 4 nw, then nw ids to
--       withdraw, then item id / label pairs
-- Open round (AWAITING_LABELS): new labels for pending ids are stored; changes (overwrite,
-- withdraw) apply at once and a withdrawn pick of this round waits for a label again.
-- Any other state: changes to existing labels are queued in the corrections hash (label, or
-- '-1' = withdraw) and applied when the experiment next enters AWAITING_LABELS or CREATED.
local meta = redis.call('HMGET', KEYS[1], 'state', 'round', 'version', 'num_classes')
if not meta[1] then return {'not_found'} end
if tonumber(meta[2]) ~= tonumber(ARGV[2]) then return {'stale'} end
local open = meta[1] == 'AWAITING_LABELS'
local C = tonumber(meta[4])
local overwrite = ARGV[3] == '1'
local nw = tonumber(ARGV[4])
local unknown, bad_label, conflict, closed_new = {}, {}, {}, {}
local new_ids, new_labels, changed_ids, changed_labels = {}, {}, {}, {}
local withdraw_ids, defer_ids, defer_values = {}, {}, {}
local unchanged = 0
for i = 5, 4 + nw do
  local id = ARGV[i]
  local cur = redis.call('HGET', KEYS[2], id)
  local corr = redis.call('HGET', KEYS[7], id)
  if not cur or corr == '-1' then
    unchanged = unchanged + 1
  elseif open then
    withdraw_ids[#withdraw_ids + 1] = id
  else
    defer_ids[#defer_ids + 1] = id
    defer_values[#defer_values + 1] = '-1'
  end
end
for i = 5 + nw, #ARGV, 2 do
  local id, raw = ARGV[i], ARGV[i + 1]
  local l = tonumber(raw)
  if l == nil or l < 0 or l >= C or l ~= math.floor(l) then
    bad_label[#bad_label + 1] = id .. '=' .. raw
  else
    local cur = redis.call('HGET', KEYS[2], id)
    local corr = redis.call('HGET', KEYS[7], id)
    local effective = corr or cur
    if effective and effective ~= '-1' and tonumber(effective) == l then
      unchanged = unchanged + 1
    elseif cur and effective ~= '-1' and not overwrite then
      conflict[#conflict + 1] = id .. '=' .. effective
    elseif cur and open then
      changed_ids[#changed_ids + 1] = id
      changed_labels[#changed_labels + 1] = raw
    elseif cur then
      defer_ids[#defer_ids + 1] = id
      defer_values[#defer_values + 1] = (tonumber(cur) == l) and '' or raw
    elseif open and redis.call('SISMEMBER', KEYS[4], id) == 1 then
      new_ids[#new_ids + 1] = id
      new_labels[#new_labels + 1] = raw
    elseif open then
      unknown[#unknown + 1] = id
    else
      closed_new[#closed_new + 1] = id
    end
  end
end
if #unknown > 0 or #bad_label > 0 then
  return {'invalid', tostring(#unknown), cjson.encode(head(unknown, 20)),
          tostring(#bad_label), cjson.encode(head(bad_label, 20)), tostring(C)}
end
if #closed_new > 0 then return {'state', meta[1], meta[2], meta[3]} end
if #conflict > 0 then
  return {'conflict', tostring(#conflict), cjson.encode(head(conflict, 20))}
end
for i = 1, #new_ids do
  redis.call('HSET', KEYS[2], new_ids[i], new_labels[i])
  redis.call('RPUSH', KEYS[3], new_ids[i])
  redis.call('SREM', KEYS[4], new_ids[i])
end
for i = 1, #changed_ids do redis.call('HSET', KEYS[2], changed_ids[i], changed_labels[i]) end
local selected = {}
local raw_sel = redis.call('HGET', KEYS[5], 'selected_item_ids')
if raw_sel then for _, id in ipairs(cjson.decode(raw_sel)) do selected[id] = true end end
for i = 1, #withdraw_ids do
  local id = withdraw_ids[i]
  redis.call('HDEL', KEYS[2], id)
  redis.call('LREM', KEYS[3], 0, id)
  if selected[id] then redis.call('SADD', KEYS[4], id) end
end
for i = 1, #defer_ids do
  if defer_values[i] == '' then
    redis.call('HDEL', KEYS[7], defer_ids[i])
  else
    redis.call('HSET', KEYS[7], defer_ids[i], defer_values[i])
  end
end
local accepted = #new_ids + #changed_ids
local version = tonumber(meta[3])
local round = tonumber(meta[2])
local state = meta[1]
local remaining = redis.call('SCARD', KEYS[4])
local now = now_str()
if accepted + #withdraw_ids + #defer_ids > 0 then
  version = version + 1
  redis.call('HSET', KEYS[1], 'version', tostring(version), 'updated_unix', now)
  event(KEYS[6], ARGV[1], round, state, version, now,
    string.format('labels: %d accepted (%d new, %d changed), %d withdrawn, %d deferred as ' ..
      'corrections, %d unchanged, %d remaining', accepted, #new_ids, #changed_ids,
      #withdraw_ids, #defer_ids, unchanged, remaining), 'labels', '')
end
if open and remaining == 0 then
  version = version + 1
  state = 'LABELS_COMPLETE'
  redis.call('HSET', KEYS[1], 'state', state, 'version', tostring(version), 'updated_unix', now)
  redis.call('HSET', KEYS[5], 'state', state, 'state_times.' .. state, now)
  event(KEYS[6], ARGV[1], round, state, version, now, 'every selected item is labeled',
    'transition', 'AWAITING_LABELS')
end
return {'ok', tostring(accepted), tostring(unchanged), tostring(remaining), state,
        tostring(version), tostring(#withdraw_ids), tostring(#defer_ids)}
"""
)
