-- Keep a worker's in-flight entries claimed, but only those whose attempt it still owns.
-- Caller: komt_bot.queue.calls.Heartbeat. KEYS: K.jobs, then one job hash per job; ARGV from TAIL: per job, its
-- entry id and attempt.
-- Returns the positions (1-based) of the jobs the worker lost: it must drop them at once.
local lost = {}
for i = 2, #KEYS do
  local at = TAIL + 2 * (i - 2)
  local entry, attempt = ARGV[at], ARGV[at + 1]
  local owned, worker = owns(attempt, KEYS[i], 'worker')
  if owned and worker == A.worker then
    redis.call('XCLAIM', K.jobs, GROUP, A.worker, 0, entry, 'JUSTID')
  else
    lost[#lost + 1] = i - 1
  end
end
return lost
