-- Make a failed or cancelled job queued again, as submit does: new sequence number (back of the queue), attempt 0,
-- a fresh jobs-stream entry, its old output and dead-letter entries gone (a reader replays the new attempt only).
-- Caller: komt_bot.queue.calls.RequeueEnded. Returns {previous state or "", dead-letter entries removed}.
local state = redis.call('HGET', K.job, 'state')
if not state then return {'', 0} end
if state ~= 'failed' and state ~= 'cancelled' then return {state, 0} end
local previous_error = redis.call('HGET', K.job, 'error')
redis.call('HDEL', K.job, 'worker', 'started', 'finished', 'entry', 'error', 'error_code', 'finish_reason', 'usage',
  'strikes', 'lost', 'progress', 'published', 'ended_attempt', 'start_token', 'counted', 'line')
local seq = redis.call('INCR', K.seq)
-- "requeued" is the record's field of when an operator requeued it (not the consumer REQUEUED_CONSUMER)
redis.call('HSET', K.job, 'state', 'queued', 'attempt', 0, 'seq', seq, "requeued", A.now)
if previous_error then redis.call('HSET', K.job, 'previous_error', previous_error) end
redis.call('PERSIST', K.job)
redis.call('DEL', K.out, K.cancel)
redis.call('ZADD', K.waiting, seq, A.job_id)
local created = redis.call('HGET', K.job, 'created')
if created then redis.call('ZADD', K.index, created, A.job_id) end
local removed = 0
for _, entry in ipairs(redis.call('XRANGE', K.dlq, '-', '+', 'COUNT', 10000)) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'job_id' and fields[i + 1] == A.job_id then
      redis.call('XDEL', K.dlq, entry[1])
      removed = removed + 1
    end
  end
end
enqueue(A.job_id, seq)
return {state, removed}
