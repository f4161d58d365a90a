-- How many jobs will start before a waiting job, in the fair order claim.lua follows: the requeued jobs (a
-- requeued job: those before it), then, for a job k-th in its person's line, k of its own and, of every other
-- person's line, min(length, k + 1) from those ranked before its person and min(length, k) from those after.
-- (Per-person caps and jobs queued later are not foreseen.) O(people waiting).
-- Caller: komt_bot.queue.fairness.Position. Returns the count, or -1 when the job is not waiting.
local head = redis.call('ZRANK', K.fair_head, A.job_id)
if head then return head end
local job_key = K.job_prefix .. A.job_id
if not redis.call('ZSCORE', K.waiting, A.job_id) then return -1 end
local mine = redis.call('HGET', job_key, 'line')
local k = mine and redis.call('LPOS', K.fair_line .. mine, A.job_id)
if not k then return redis.call('ZRANK', K.waiting, A.job_id) end  -- an entry of a version without fair share
local ahead = redis.call('ZCARD', K.fair_head) + k
local before = true
for _, person in ipairs(redis.call('ZRANGE', K.fair_people, 0, -1)) do
  if person == mine then
    before = false
  else
    ahead = ahead + math.min(redis.call('LLEN', K.fair_line .. person), k + (before and 1 or 0))
  end
end
return ahead
