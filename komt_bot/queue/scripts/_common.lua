-- Shared by every script, prepended after the prelude komt_bot.queue.scripts generates from Python: the protocol's
-- constants (GROUP, REQUEUED_CONSUMER, REQUEUED_IDLE_MS, RECENT_WINDOW, DEAD_LETTER, TAKEOVER_ERROR, LOST_ERROR),
-- K (the script's KEYS by name), A (its ARGV by name) and TAIL (the first ARGV after the named ones). The names are
-- the fields of the script's caller in komt_bot.queue.calls. A job-changing script's K: job (hash), out (output
-- stream), waiting, jobs (stream), cancel (flag), stats, recent (prefix: state appended), index, dlq, seq, and
-- the fair share's keys (below): fair_people, fair_served, fair_running, fair_clock, fair_head, fair_line (prefix:
-- person appended), job_prefix (a job's hash is job_prefix .. id), wake.
-- Events arrive encoded by Python (komt_bot.jobs.Event.encode) as {type, data}: a script only appends them.

-- Fair share (docs/ARCHITECTURE.md, "Fair order"). A queued job waits in its person's line, the list
-- K.fair_line .. person (first come, first served). K.fair_people ranks the people with a waiting job by the tick
-- of their last start (K.fair_served, the newest SERVED_MEMORY people; K.fair_clock counts starts); a person
-- without one ranks ahead of every person served, in the order they arrived. claim.lua pops the head of the first
-- person's line: round-robin, least recently served first. K.fair_running counts each person's jobs taken and not
-- yet ended or handed back (the job's 'counted' field says whose count it is in, so it is counted once).
-- K.fair_head holds requeued jobs (job -> seq), which wait as pending stream entries and go before every line.
local SERVED_MEMORY = 10000
local NEWCOMER = 2 ^ 50  -- a person never served ranks at seq - NEWCOMER, below every tick

local function person_of(job_key)
  local fields = redis.call('HMGET', job_key or K.job, 'platform', 'user')
  if not fields[2] or fields[2] == '' then return 'anonymous' end
  return (fields[1] or '') .. ':' .. fields[2]
end

-- Tell blocked claimers that there is work (a stream of one entry: its last id is what they wait past).
local function wake()
  redis.call('XADD', K.wake, 'MAXLEN', 1, '*', 'w', 1)
end

-- Put a queued job at the back of its person's line; a person whose line was empty takes their place in the round.
local function enqueue(job_id, seq)
  local person = person_of()
  local line = K.fair_line .. person
  redis.call('HSET', K.job, 'line', person)
  if redis.call('RPUSH', line, job_id) == 1 then
    local served = redis.call('ZSCORE', K.fair_served, person)
    redis.call('ZADD', K.fair_people, served or (tonumber(seq) - NEWCOMER), person)
  end
  wake()
end

-- Count a taken job in its person's running jobs (once).
local function count_running(job_key)
  if redis.call('HEXISTS', job_key, 'counted') == 1 then return end
  local person = person_of(job_key)
  redis.call('HSET', job_key, 'counted', person)
  redis.call('HINCRBY', K.fair_running, person, 1)
end

-- A job leaves its person's running jobs (ended, handed back), or its line (ended while it waited there).
local function leave_fair(job_id, job_key)
  local counted = redis.call('HGET', job_key, 'counted')
  if counted then
    redis.call('HDEL', job_key, 'counted')
    if redis.call('HINCRBY', K.fair_running, counted, -1) <= 0 then redis.call('HDEL', K.fair_running, counted) end
  end
  local person = redis.call('HGET', job_key, 'line')
  if person then
    redis.call('HDEL', job_key, 'line')
    local line = K.fair_line .. person
    redis.call('LREM', line, 1, job_id)
    if redis.call('LLEN', line) == 0 then redis.call('ZREM', K.fair_people, person) end
  end
  redis.call('ZREM', K.fair_head, job_id)
end

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
  leave_fair(job_id, K.job)
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
  leave_fair(job_id, K.job)
  redis.call('ZADD', K.fair_head, seq, job_id)
  redis.call('XCLAIM', K.jobs, GROUP, REQUEUED_CONSUMER, 0, entry_id, 'IDLE', REQUEUED_IDLE_MS, 'JUSTID')
  wake()
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
