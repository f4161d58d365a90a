-- Start a claimed entry's job: one new attempt, or end it if it was cancelled meanwhile or is to be given up.
-- Caller: komt_bot.queue.calls.Start. Returns its StartStatus, the attempt and more: {"run", attempt, request JSON},
-- {"skip", 0} (gone or final), {"cancelled", attempt}, {"dead", attempt}, or {"give_up", attempt, error}: the job
-- is to be dead-lettered and nothing was written. Python owns the events, so the caller encodes the dead-letter
-- event for that error and calls again with it (give_up_event, give_up_attempt, give_up_error); the job is
-- dead-lettered if the verdict still holds. A retry whose first try landed (same start token) gets the same attempt.
--
-- Attempts charge the guilty. A job found still 'running' was taken over from a worker that went silent (killed,
-- frozen). It gets a strike only when that attempt never published any text: a question that crashes workers
-- does so before its first token, while innocent neighbours were streaming. Generation errors strike in fail.lua.
local state = redis.call('HGET', K.job, 'state')
if (not state) or state == 'done' or state == 'failed' or state == 'cancelled' then
  redis.call('XACK', K.jobs, GROUP, A.entry_id); redis.call('XDEL', K.jobs, A.entry_id)
  return {'skip', 0}
end
if state == 'running' and redis.call('HGET', K.job, 'start_token') == A.start_token then
  return {'run', tonumber(redis.call('HGET', K.job, 'attempt')), redis.call('HGET', K.job, 'request') or '{}'}
end
local attempt = tonumber(redis.call('HGET', K.job, 'attempt') or '0') + 1
local taken_over = state == 'running'
local struck = taken_over and redis.call('HGET', K.job, 'progress') ~= tostring(attempt - 1)
local cancelled = redis.call('EXISTS', K.cancel) == 1
local strikes = tonumber(redis.call('HGET', K.job, 'strikes') or '0') + (struck and 1 or 0)
local err = struck and TAKEOVER_ERROR or redis.call('HGET', K.job, 'error') or LOST_ERROR
local dead = not cancelled and (strikes >= tonumber(A.max_strikes) or attempt > tonumber(A.max_attempts))
if dead and (A.give_up_attempt ~= tostring(attempt) or A.give_up_error ~= err) then
  return {'give_up', attempt, err}
end
redis.call('HSET', K.job, 'attempt', attempt)
if taken_over then redis.call('HINCRBY', K.job, 'lost', 1) end
if struck then
  redis.call('HINCRBY', K.job, 'strikes', 1)
  redis.call('HSET', K.job, 'error', TAKEOVER_ERROR)
end
if cancelled then
  end_job(A.job_id, A.entry_id, 'cancelled', A.now, A.ttl, A.cancelled_event)
  return {'cancelled', attempt}
end
if dead then
  give_up(A.job_id, A.entry_id, attempt - 1, err, A.now, A.ttl, A.give_up_event)
  return {'dead', attempt}
end
redis.call('HSET', K.job, 'state', 'running', 'worker', A.worker, 'started', A.now, 'entry', A.entry_id,
  'published', 0, 'start_token', A.start_token)
redis.call('ZREM', K.waiting, A.job_id)
redis.call('ZREM', K.fair_head, A.job_id)
count_running(K.job)
append(K.out, A.start_event, attempt)
return {'run', attempt, redis.call('HGET', K.job, 'request') or '{}'}
