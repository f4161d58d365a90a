-- Ask a job to stop: a queued one ends at once, a running one gets its cancel flag (read by its worker).
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 now, 3 job ttl, 4 cancel ttl, 5 "1" = only a queued job (leave a running one alone)
-- Returns the state the job was in (or "" when unknown).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'queued' then
  end_job(ARGV[1], '', 'cancelled', ARGV[2], ARGV[3], 'done', '{"finish_reason":"cancelled"}')
elseif state == 'running' and ARGV[5] ~= '1' then
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
end
return state
