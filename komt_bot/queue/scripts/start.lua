-- Start a claimed entry's job: one new attempt, or end it if it was cancelled meanwhile or used up its attempts.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 entry id, 2 worker, 3 now, 4 max attempts, 5 job id, 6 job ttl
-- Returns {status, attempt}: status "run", "skip" (gone or final), "cancelled", "dead".
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'done' or state == 'failed' or state == 'cancelled' then
  redis.call('XACK', KEYS[4], GROUP, ARGV[1]); redis.call('XDEL', KEYS[4], ARGV[1])
  return {'skip', 0}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
if redis.call('EXISTS', KEYS[5]) == 1 then
  end_job(ARGV[5], ARGV[1], 'cancelled', ARGV[3], ARGV[6], 'done', '{"finish_reason":"cancelled"}')
  return {'cancelled', attempt}
end
if attempt > tonumber(ARGV[4]) then
  dead_letter(ARGV[5], ARGV[1], attempt - 1, redis.call('HGET', KEYS[1], 'error') or 'worker lost', ARGV[3], ARGV[6])
  return {'dead', attempt}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'started', ARGV[3], 'entry', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[2], '*', 'type', 'start', 'data', cjson.encode({attempt = attempt}))
return {'run', attempt}
