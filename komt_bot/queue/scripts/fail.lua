-- A worker's attempt failed. A retryable failure is a strike: with strikes left the job goes back to the head of
-- the queue, else it is dead-lettered. A failure that is not retryable ends the job with its error.
-- Caller: komt_bot.queue.calls.Fail. Returns its FailOutcome: "retried", "dead", "failed" or "lost" (the worker no
-- longer owns the attempt: nothing written).
if already_ended(A.attempt) then
  if redis.call('HGET', K.job, 'error_code') == DEAD_LETTER then return 'dead' end
  return 'failed'
end
if redis.call('HGET', K.job, 'state') == 'queued' and redis.call('HGET', K.job, 'attempt') == A.attempt
    and redis.call('HGET', K.job, 'error') == A.message then
  return 'retried'  -- a retry of this same call, whose first try landed
end
if not owns(A.attempt) then return 'lost' end
redis.call('HSET', K.job, 'error', A.message)
if A.retryable == '1' then
  local strikes = redis.call('HINCRBY', K.job, 'strikes', 1)
  if strikes < tonumber(A.max_strikes) then
    requeue_entry(A.job_id, A.entry_id)
    return 'retried'
  end
  give_up(A.job_id, A.entry_id, A.attempt, A.message, A.now, A.ttl, A.dead_event)
  return 'dead'
end
redis.call('HSET', K.job, 'error_code', A.code)
end_job(A.job_id, A.entry_id, 'failed', A.now, A.ttl, A.failed_event, A.attempt)
return 'failed'
