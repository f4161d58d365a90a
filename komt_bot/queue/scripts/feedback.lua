-- Record one person's rating of an answer: one vote a person, a second click changes it (never adds).
-- Caller: komt_bot.queue.calls.RecordFeedback. K: job (hash), feedback (the answer's votes), totals, recent
-- (prefix: rating appended).
-- Returns {0} when the job's record is gone, else {1, the person's previous rating or "", every rating...}.
-- Safe to retry: the same click again changes nothing.
local ttl = redis.call('PTTL', K.job)
if ttl == -2 then return {0} end
local previous = redis.call('HGET', K.feedback, A.person) or ''
if previous ~= A.rating then
  redis.call('HSET', K.feedback, A.person, A.rating)
  if previous ~= '' then
    redis.call('HINCRBY', K.totals, previous, -1)
    redis.call('ZREM', K.recent .. previous, A.member)
  end
  redis.call('HINCRBY', K.totals, A.rating, 1)
  redis.call('ZADD', K.recent .. A.rating, A.now, A.member)
  redis.call('ZREMRANGEBYSCORE', K.recent .. A.rating, 0, tonumber(A.now) - RECENT_WINDOW)
end
-- The votes live as long as the answer's record.
if ttl > 0 then redis.call('PEXPIRE', K.feedback, ttl) else redis.call('EXPIRE', K.feedback, A.ttl) end
local result = {1, previous}
for _, rating in ipairs(redis.call('HVALS', K.feedback)) do table.insert(result, rating) end
return result
