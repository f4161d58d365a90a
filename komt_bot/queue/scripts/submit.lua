-- Queue a job, or return the one its idempotency key (or its job id) already made.
-- KEYS: the job keys (see _common.lua), 11 idempotency key (the job hash itself when there is none)
-- ARGV: 1 job id, 2 backlog cap, 3 idempotency ttl, 4 submit token (unique per call), 5.. field/value pairs
-- Returns {1, id} created, {0, id} already made (by this key, or under this job id by another call),
-- {-1, backlog} refused. A retry of the same call (same submit token) returns {1, id} again and changes nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'submit_token') == ARGV[4] then return {1, ARGV[1]} end
  return {0, ARGV[1]}
end
if KEYS[11] ~= KEYS[1] then
  local existing = redis.call('GET', KEYS[11])
  if existing then return {0, existing} end
end
local backlog = redis.call('ZCARD', KEYS[3])
if backlog >= tonumber(ARGV[2]) then return {-1, tostring(backlog)} end
if KEYS[11] ~= KEYS[1] then redis.call('SET', KEYS[11], ARGV[1], 'EX', ARGV[3]) end
local seq = redis.call('INCR', KEYS[10])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0, 'seq', seq, 'submit_token', ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[8], created, ARGV[1])
redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[1])
return {1, ARGV[1]}
