-- Shared by every script, prepended after the prelude komt_bot.queue.scripts generates from Python: the protocol's
-- constants (GROUP, REQUEUED_CONSUMER, REQUEUED_IDLE_MS, RECENT_WINDOW, DEAD_LETTER, TAKEOVER_ERROR, LOST_ERROR),
-- K (the script's KEYS by name), A (its ARGV by name) and TAIL (the first ARGV after the named ones). The names are
-- the fields of the script's caller in komt_bot.queue.calls. A job-changing script's K: job (hash), out (output
-- stream), waiting, jobs (stream), cancel (flag), stats, recent (prefix: state appended), index, dlq, seq.
-- Events arrive encoded by Python (komt_bot.jobs.Event.encode) as {type, data}: a script only appends them.

-- A worker's fencing check: it may write for the job only while the job runs the attempt it started.
-- One HMGET of state, attempt and any further fields named, which come back after the verdict: the hot path
-- (publish.lua) reads its 'published' counter in the same command.
local function owns(attempt, job_key, ...)
  local fields = redis.call('HMGET', job_key or K.job, 'state', 'attempt', ...)
  return fields[1] == 'running' and fields[2] == attempt, unpack(fields, 3)
end

-- An end the same attempt already wrote (a retry after a reply was lost on the way back).
local function already_ended(attempt)
  local state = redis.call('HGET', K.job, 'state')
  return (state == 'done' or state == 'failed' or state == 'cancelled')
    and redis.call('HGET', K.job, 'ended_attempt') == attempt
end

-- Append an encoded event; a start or error event also gets the attempt it is about, a field of its own.
local function append(stream, event, attempt)
  if attempt then
    redis.call('XADD', stream, '*', 'type', event[1], 'data', event[2], 'attempt', attempt)
  else
    redis.call('XADD', stream, '*', 'type', event[1], 'data', event[2])
  end
end

-- The one place a job reaches a final state: its last event, the record, expiry, counters, the stream entry.
local function end_job(job_id, entry_id, state, now, ttl, event, attempt)
  append(K.out, event, attempt)
  redis.call('HSET', K.job, 'state', state, 'finished', now,
    'ended_attempt', redis.call('HGET', K.job, 'attempt') or '0')
  redis.call('EXPIRE', K.job, ttl)
  redis.call('EXPIRE', K.out, ttl)
  redis.call('ZREM', K.waiting, job_id)
  redis.call('DEL', K.cancel)
  if entry_id ~= '' then
    redis.call('XACK', K.jobs, GROUP, entry_id)
    redis.call('XDEL', K.jobs, entry_id)
  end
  redis.call('HINCRBY', K.stats, state, 1)
  redis.call('ZADD', K.recent .. state, now, job_id)
  redis.call('ZREMRANGEBYSCORE', K.recent .. state, 0, tonumber(now) - RECENT_WINDOW)
  redis.call('ZREMRANGEBYSCORE', K.index, 0, tonumber(now) - tonumber(ttl))
end

-- A job whose generation raised too often, or that kept dying with its workers: copy it to the dead-letter stream
-- and end it with the error event its caller encoded (code DEAD_LETTER, message err).
local function give_up(job_id, entry_id, attempts, err, now, ttl, event)
  redis.call('HSET', K.job, 'error', err, 'error_code', DEAD_LETTER)
  redis.call('XADD', K.dlq, '*', 'job_id', job_id, 'attempts', attempts, 'error', err)
  end_job(job_id, entry_id, 'failed', now, ttl, event, attempts)
end

-- Put a claimed job back at its old place in the queue. A stream cannot take an entry at its front, so the entry
-- stays pending, owned by REQUEUED_CONSUMER and idle for months: every claim takes such entries first.
local function requeue_entry(job_id, entry_id)
  local seq = redis.call('HGET', K.job, 'seq') or '0'
  redis.call('HSET', K.job, 'state', 'queued', 'worker', '')
  redis.call('ZADD', K.waiting, seq, job_id)
  redis.call('XCLAIM', K.jobs, GROUP, REQUEUED_CONSUMER, 0, entry_id, 'IDLE', REQUEUED_IDLE_MS, 'JUSTID')
end

-- Redis's own clock in seconds: delivery leases are set and compared in one clock, whatever the hosts' clocks say
-- (as XAUTOCLAIM's idle times are). Stored with millisecond precision.
local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function seconds_text(value)
  return string.format('%.3f', value)
end
