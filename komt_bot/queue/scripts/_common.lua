-- Shared by every script that changes a job's state (prepended by komt_bot.queue.scripts).
-- KEYS of such a script, always in this order (komt_bot.queue.keys.QueueKeys.for_job):
--   1 job hash  2 output stream  3 waiting set  4 jobs stream  5 cancel flag  6 stats hash
--   7 recent-set prefix (state is appended)  8 index  9 dead-letter stream  10 sequence counter
local GROUP = 'workers'
local RECENT_WINDOW = 3600

-- A worker's fencing check: it may write for the job only while the job runs the attempt it started.
-- One HMGET of state, attempt and any further fields named, which come back after the verdict: the hot path
-- (publish.lua) reads its 'published' counter in the same command.
local function owns(attempt, job_key, ...)
  local fields = redis.call('HMGET', job_key or KEYS[1], 'state', 'attempt', ...)
  return fields[1] == 'running' and fields[2] == attempt, unpack(fields, 3)
end

-- An end the same attempt already wrote (a retry after a reply was lost on the way back).
local function already_ended(attempt)
  local state = redis.call('HGET', KEYS[1], 'state')
  return (state == 'done' or state == 'failed' or state == 'cancelled')
    and redis.call('HGET', KEYS[1], 'ended_attempt') == attempt
end

-- The one place a job reaches a final state: its last event, the record, expiry, counters, the stream entry.
local function end_job(job_id, entry_id, state, now, ttl, event_type, event_data)
  redis.call('XADD', KEYS[2], '*', 'type', event_type, 'data', event_data)
  redis.call('HSET', KEYS[1], 'state', state, 'finished', now,
    'ended_attempt', redis.call('HGET', KEYS[1], 'attempt') or '0')
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('ZREM', KEYS[3], job_id)
  redis.call('DEL', KEYS[5])
  if entry_id ~= '' then
    redis.call('XACK', KEYS[4], GROUP, entry_id)
    redis.call('XDEL', KEYS[4], entry_id)
  end
  redis.call('HINCRBY', KEYS[6], state, 1)
  redis.call('ZADD', KEYS[7] .. state, now, job_id)
  redis.call('ZREMRANGEBYSCORE', KEYS[7] .. state, 0, tonumber(now) - RECENT_WINDOW)
  redis.call('ZREMRANGEBYSCORE', KEYS[8], 0, tonumber(now) - tonumber(ttl))
end

-- A job whose generation raised too often, or that kept dying with its workers: copy to the dead-letter stream.
local function dead_letter(job_id, entry_id, attempts, err, now, ttl)
  redis.call('HSET', KEYS[1], 'error', err, 'error_code', 'dead_letter')
  redis.call('XADD', KEYS[9], '*', 'job_id', job_id, 'attempts', attempts, 'error', err)
  end_job(job_id, entry_id, 'failed', now, ttl, 'error',
    cjson.encode({code = 'dead_letter', message = err, attempt = tonumber(attempts)}))
end

-- Put a claimed job back at its old place in the queue. A stream cannot take an entry at its front, so the entry
-- stays pending, owned by the consumer 'requeued' and idle for months: every claim takes such entries first.
local function requeue_entry(job_id, entry_id, requeued_idle_ms)
  local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
  redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '')
  redis.call('ZADD', KEYS[3], seq, job_id)
  redis.call('XCLAIM', KEYS[4], GROUP, 'requeued', 0, entry_id, 'IDLE', requeued_idle_ms, 'JUSTID')
end
