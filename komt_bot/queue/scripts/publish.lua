-- Publish the text of several running jobs at once (one call per worker per coalescing tick).
-- Caller: komt_bot.queue.calls.Publish. KEYS: per job, its hash and its output stream; ARGV from TAIL: per job,
-- four values: attempt, sequence number of this piece, its delta event (type, data).
-- Returns, per job, 1 (published, or already published by a retry) or 0 (the worker no longer owns the job).
-- Three commands per job: HMGET (fencing and the published counter), HSET, XADD.
local results = {}
for i = 1, #KEYS, 2 do
  local job, out = KEYS[i], KEYS[i + 1]
  local n = (i + 1) / 2
  local at = TAIL + 4 * (n - 1)
  local attempt, seq = ARGV[at], tonumber(ARGV[at + 1])
  local owned, published = owns(attempt, job, 'published')
  if not owned then
    results[n] = 0
  else
    if seq > tonumber(published or '0') then
      redis.call('HSET', job, 'published', seq, 'progress', attempt)
      append(out, {ARGV[at + 2], ARGV[at + 3]})
    end
    results[n] = 1
  end
end
return results
