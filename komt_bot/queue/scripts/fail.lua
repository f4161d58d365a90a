-- A worker's attempt failed. A retryable failure is a strike: with strikes left the job goes back to the head of
-- the queue, else it is dead-lettered. A failure that is not retryable ends the job with its error.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 entry id, 3 attempt, 4 max strikes, 5 code, 6 message, 7 "1" retryable, 8 now, 9 job ttl,
--       10 requeued idle ms
-- Returns "retried", "dead", "failed" or "lost" (the worker no longer owns the attempt: nothing written).
if already_ended(ARGV[3]) then
  if redis.call('HGET', KEYS[1], 'error_code') == 'dead_letter' then return 'dead' end
  return 'failed'
end
if redis.call('HGET', KEYS[1], 'state') == 'queued' and redis.call('HGET', KEYS[1], 'attempt') == ARGV[3]
    and redis.call('HGET', KEYS[1], 'error') == ARGV[6] then
  return 'retried'  -- a retry of this same call, whose first try landed
end
if not owns(ARGV[3]) then return 'lost' end
redis.call('HSET', KEYS[1], 'error', ARGV[6])
if ARGV[7] == '1' then
  local strikes = redis.call('HINCRBY', KEYS[1], 'strikes', 1)
  if strikes < tonumber(ARGV[4]) then
    requeue_entry(ARGV[1], ARGV[2], ARGV[10])
    return 'retried'
  end
  dead_letter(ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[8], ARGV[9])
  return 'dead'
end
redis.call('HSET', KEYS[1], 'error_code', ARGV[5])
end_job(ARGV[1], ARGV[2], 'failed', ARGV[8], ARGV[9], 'error',
  cjson.encode({code = ARGV[5], message = ARGV[6], attempt = tonumber(ARGV[3])}))
return 'failed'
