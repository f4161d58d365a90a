-- Record one person's rating of an answer: one vote a person, a second click changes it (never adds).
-- KEYS: 1 job hash, 2 the answer's feedback hash, 3 feedback totals hash, 4 recent-set prefix (rating appended)
-- ARGV: 1 person, 2 rating, 3 now, 4 ttl for a job hash that has none, 5 recent-set member, 6 recent window (s)
-- Returns {0} when the job's record is gone, else {1, the person's previous rating or "", every rating...}.
-- Safe to retry: the same click again changes nothing.
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {0} end
local previous = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if previous ~= ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if previous ~= '' then
    redis.call('HINCRBY', KEYS[3], previous, -1)
    redis.call('ZREM', KEYS[4] .. previous, ARGV[5])
  end
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  redis.call('ZADD', KEYS[4] .. ARGV[2], ARGV[3], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[4] .. ARGV[2], 0, tonumber(ARGV[3]) - tonumber(ARGV[6]))
end
-- The votes live as long as the answer's record.
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('EXPIRE', KEYS[2], ARGV[4]) end
local result = {1, previous}
for _, rating in ipairs(redis.call('HVALS', KEYS[2])) do table.insert(result, rating) end
return result
