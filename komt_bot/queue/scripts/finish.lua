-- A worker's attempt ended: the rest of its text, then done (or cancelled) with the finish reason and usage.
-- Caller: komt_bot.queue.calls.Finish. Returns "ok" or "lost" (the worker no longer owns the attempt: it wrote
-- nothing).
if already_ended(A.attempt) then return 'ok' end
local owned, published = owns(A.attempt, K.job, 'published')
if not owned then return 'lost' end
if A.tail_event[1] ~= '' and tonumber(A.tail_seq) > tonumber(published or '0') then
  redis.call('HSET', K.job, 'published', A.tail_seq, 'progress', A.attempt)
  append(K.out, A.tail_event)
end
redis.call('HSET', K.job, 'finish_reason', A.finish_reason, 'usage', A.usage)
end_job(A.job_id, A.entry_id, A.state, A.now, A.ttl, A.done_event)
return 'ok'
