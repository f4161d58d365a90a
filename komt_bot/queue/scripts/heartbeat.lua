-- Keep a worker's in-flight entries claimed, but only those whose attempt it still owns.
-- KEYS: 1 jobs stream, then one job hash per job
-- ARGV: 1 worker, then per job: entry id, attempt
-- Returns the positions (1-based) of the jobs the worker lost: it must drop them at once.
local lost = {}
for i = 2, #KEYS do
  local entry, attempt = ARGV[2 * (i - 1)], ARGV[2 * (i - 1) + 1]
  local owned, worker = owns(attempt, KEYS[i], 'worker')
  if owned and worker == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, entry, 'JUSTID')
  else
    lost[#lost + 1] = i - 1
  end
end
return lost
