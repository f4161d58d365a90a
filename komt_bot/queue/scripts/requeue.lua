-- Put a claimed job back at the head of the queue (drain), ahead of every new job. No strike: the worker stopped.
-- Caller: komt_bot.queue.calls.Requeue. Returns "ok" or "lost".
if not owns(A.attempt) then return 'lost' end
if A.error ~= '' then redis.call('HSET', K.job, 'error', A.error) end
requeue_entry(A.job_id, A.entry_id)
return 'ok'
