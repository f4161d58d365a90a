-- A worker's job ended: done (or cancelled) with its finish reason and usage.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 entry id, 3 state, 4 now, 5 job ttl, 6 finish reason, 7 usage json
redis.call('HSET', KEYS[1], 'finish_reason', ARGV[6], 'usage', ARGV[7])
end_job(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], 'done',
  cjson.encode({finish_reason = ARGV[6], usage = cjson.decode(ARGV[7])}))
return 1
