-- Ask a job to stop: a queued one ends at once, a running one gets its cancel flag (read by its worker).
-- Caller: komt_bot.queue.calls.Cancel. Returns the state the job was in (or "" when unknown).
local state = redis.call('HGET', K.job, 'state')
if not state then return '' end
if state == 'queued' then
  end_job(A.job_id, '', 'cancelled', A.now, A.ttl, A.cancelled_event)
elseif state == 'running' and A.only_if_queued ~= '1' then
  redis.call('SET', K.cancel, '1', 'EX', A.cancel_ttl)
end
return state
