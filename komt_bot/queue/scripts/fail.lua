-- A worker's attempt failed. Retryable with attempts left: back to the head of the queue; else the job ends with an
-- error event (dead-lettered when the failure was retryable).
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 entry id, 3 attempt, 4 max attempts, 5 code, 6 message, 7 "1" retryable, 8 now, 9 job ttl,
--       10 requeued idle ms
-- Returns "retried", "dead" or "failed".
if ARGV[7] == '1' and tonumber(ARGV[3]) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'error', ARGV[6])
  requeue_entry(ARGV[1], ARGV[2], ARGV[10])
  return 'retried'
end
if ARGV[7] == '1' then
  dead_letter(ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[8], ARGV[9])
  return 'dead'
end
redis.call('HSET', KEYS[1], 'error', ARGV[6], 'error_code', ARGV[5])
end_job(ARGV[1], ARGV[2], 'failed', ARGV[8], ARGV[9], 'error',
  cjson.encode({code = ARGV[5], message = ARGV[6], attempt = tonumber(ARGV[3])}))
return 'failed'
