-- Take up to A.count new jobs for a worker, in the fair order (see "Fair share" in _common.lua), and make each
-- one's stream entry, delivered to this consumer: from then on it is pending like any entry, so heartbeats,
-- takeovers of a dead worker's jobs and hand-backs work on it as before.
-- Caller: komt_bot.queue.fairness.Claim. K: jobs, the fair share's keys, job_prefix, wake.
-- Returns {wake id, entry id, job id, entry id, job id, ...}: the wake stream's last id (a claimer that got nothing
-- blocks on K.wake past it, so a job queued after this call wakes it) and the entries taken.
--
-- Entries nobody has read yet come first: jobs queued by a version without fair share. Then, per job: the first
-- person in K.fair_people whose running jobs are under A.max_running (0: no cap), skipping those at their cap
-- (at most running/cap people, never the backlog), or the first person when everyone waiting is at their cap (a
-- slot is never left idle). O(log n) per job.
local taken = {}
local count = tonumber(A.count)
local cap = tonumber(A.max_running)
local last = redis.call('XREVRANGE', K.wake, '+', '-', 'COUNT', 1)
taken[1] = last[1] and last[1][1] or '0-0'

local unread = redis.call('XREADGROUP', 'GROUP', GROUP, A.consumer, 'COUNT', count, 'STREAMS', K.jobs, '>')
for _, entry in ipairs(unread and unread[1][2] or {}) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'job_id' then taken[#taken + 1] = entry[1]; taken[#taken + 1] = fields[i + 1] end
  end
end

local function next_person()
  local first = nil
  local offset = 0
  while true do
    local row = redis.call('ZRANGE', K.fair_people, offset, offset)
    if not row[1] then return first end
    first = first or row[1]
    if cap <= 0 or tonumber(redis.call('HGET', K.fair_running, row[1]) or '0') < cap then return row[1] end
    offset = offset + 1
  end
end

while (#taken - 1) / 2 < count do
  local person = next_person()
  if not person then break end
  local line = K.fair_line .. person
  local job_id = redis.call('LPOP', line)
  local tick = redis.call('INCR', K.fair_clock)
  redis.call('ZADD', K.fair_served, tick, person)
  if redis.call('ZCARD', K.fair_served) > SERVED_MEMORY then
    redis.call('ZREMRANGEBYRANK', K.fair_served, 0, 0)  -- the least recently served ranks as a newcomer again
  end
  if redis.call('LLEN', line) == 0 then
    redis.call('ZREM', K.fair_people, person)
  else
    redis.call('ZADD', K.fair_people, tick, person)
  end
  local job_key = K.job_prefix .. (job_id or '')
  if job_id and redis.call('HGET', job_key, 'state') == 'queued' then
    redis.call('HDEL', job_key, 'line')
    count_running(job_key)
    local entry_id = redis.call('XADD', K.jobs, '*', 'job_id', job_id)
    -- every older entry was read above, so this reads exactly the one just made
    redis.call('XREADGROUP', 'GROUP', GROUP, A.consumer, 'COUNT', 1, 'STREAMS', K.jobs, '>')
    taken[#taken + 1] = entry_id
    taken[#taken + 1] = job_id
  end
end
return taken
