-- Queue a job, or return the one its idempotency key (or its job id) already made.
-- Caller: komt_bot.queue.calls.Submit. K.idem is the idempotency key (the job hash itself when there is none);
-- ARGV from TAIL: the record's field/value pairs.
-- Returns its SubmitStatus and the job id: {"created", id}, {"existing", id} (made by this key, or under this job
-- id by another call), or {"refused", backlog}. A retry of the same call (same submit token) returns
-- {"created", id} again and changes nothing.
if redis.call('EXISTS', K.job) == 1 then
  if redis.call('HGET', K.job, 'submit_token') == A.submit_token then return {'created', A.job_id} end
  return {'existing', A.job_id}
end
if K.idem ~= K.job then
  local existing = redis.call('GET', K.idem)
  if existing then return {'existing', existing} end
end
local backlog = redis.call('ZCARD', K.waiting)
if backlog >= tonumber(A.max_backlog) then return {'refused', backlog} end
if K.idem ~= K.job then redis.call('SET', K.idem, A.job_id, 'EX', A.idempotency_ttl) end
local seq = redis.call('INCR', K.seq)
redis.call('HSET', K.job, 'state', 'queued', 'attempt', 0, 'seq', seq, 'submit_token', A.submit_token)
for i = TAIL, #ARGV, 2 do redis.call('HSET', K.job, ARGV[i], ARGV[i + 1]) end
local created = redis.call('HGET', K.job, 'created')
redis.call('ZADD', K.waiting, seq, A.job_id)
redis.call('ZADD', K.index, created, A.job_id)
enqueue(A.job_id, seq)  -- its stream entry is made when claim.lua takes it (fair order)
return {'created', A.job_id}
