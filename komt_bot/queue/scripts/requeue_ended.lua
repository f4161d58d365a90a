-- Make a failed or cancelled job queued again, as submit does: new sequence number (back of the queue), attempt 0,
-- a fresh jobs-stream entry, its old output and dead-letter entries gone (a reader replays the new attempt only).
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 now
-- Returns {previous state or "", dead-letter entries removed}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state ~= 'failed' and state ~= 'cancelled' then return {state, 0} end
local previous_error = redis.call('HGET', KEYS[1], 'error')
redis.call('HDEL', KEYS[1], 'worker', 'started', 'finished', 'entry', 'error', 'error_code', 'finish_reason', 'usage',
  'strikes', 'lost', 'progress', 'published', 'ended_attempt', 'start_token')
local seq = redis.call('INCR', KEYS[10])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0, 'seq', seq, 'requeued', ARGV[2])
if previous_error then redis.call('HSET', KEYS[1], 'previous_error', previous_error) end
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
local created = redis.call('HGET', KEYS[1], 'created')
if created then redis.call('ZADD', KEYS[8], created, ARGV[1]) end
local removed = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[9], '-', '+', 'COUNT', 10000)) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'job_id' and fields[i + 1] == ARGV[1] then
      redis.call('XDEL', KEYS[9], entry[1])
      removed = removed + 1
    end
  end
end
redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[1])
return {state, removed}
