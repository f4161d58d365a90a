-- Start a claimed entry's job: one new attempt, or end it if it was cancelled meanwhile or is to be given up.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 entry id, 2 worker, 3 now, 4 max strikes, 5 job id, 6 job ttl, 7 max attempts in all, 8 start token
--       (unique per call: a retry whose first try landed gets the same attempt back, with nothing written twice)
-- Returns {status, attempt, request}: status "run" (with the request JSON), "skip" (gone or final), "cancelled",
-- "dead".
--
-- Attempts charge the guilty. A job found still 'running' was taken over from a worker that went silent (killed,
-- frozen). It gets a strike only when that attempt never published any text: a question that crashes workers
-- does so before its first token, while innocent neighbours were streaming. Generation errors strike in fail.lua.
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'done' or state == 'failed' or state == 'cancelled' then
  redis.call('XACK', KEYS[4], GROUP, ARGV[1]); redis.call('XDEL', KEYS[4], ARGV[1])
  return {'skip', 0}
end
if state == 'running' and redis.call('HGET', KEYS[1], 'start_token') == ARGV[8] then
  return {'run', tonumber(redis.call('HGET', KEYS[1], 'attempt')), redis.call('HGET', KEYS[1], 'request') or '{}'}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
if state == 'running' then
  redis.call('HINCRBY', KEYS[1], 'lost', 1)
  if redis.call('HGET', KEYS[1], 'progress') ~= tostring(attempt - 1) then
    redis.call('HINCRBY', KEYS[1], 'strikes', 1)
    redis.call('HSET', KEYS[1], 'error', 'its worker died before it wrote anything')
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  end_job(ARGV[5], ARGV[1], 'cancelled', ARGV[3], ARGV[6], 'done', '{"finish_reason":"cancelled"}')
  return {'cancelled', attempt}
end
local strikes = tonumber(redis.call('HGET', KEYS[1], 'strikes') or '0')
if strikes >= tonumber(ARGV[4]) or attempt > tonumber(ARGV[7]) then
  dead_letter(ARGV[5], ARGV[1], attempt - 1, redis.call('HGET', KEYS[1], 'error') or 'worker lost', ARGV[3], ARGV[6])
  return {'dead', attempt}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'started', ARGV[3], 'entry', ARGV[1],
  'published', 0, 'start_token', ARGV[8])
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[2], '*', 'type', 'start', 'data', cjson.encode({attempt = attempt}))
return {'run', attempt, redis.call('HGET', KEYS[1], 'request') or '{}'}
