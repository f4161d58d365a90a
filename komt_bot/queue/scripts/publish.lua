-- Publish the text of several running jobs at once (one call per worker per coalescing tick).
-- KEYS: per job, two keys: its hash and its output stream
-- ARGV: per job, three values: attempt, sequence number of this piece, text
-- Returns, per job, 1 (published, or already published by a retry) or 0 (the worker no longer owns the job).
-- Three commands per job: HMGET (fencing and the published counter), HSET, XADD.
local results = {}
for i = 1, #KEYS, 2 do
  local job, out = KEYS[i], KEYS[i + 1]
  local n = (i + 1) / 2
  local attempt, seq, text = ARGV[3 * n - 2], tonumber(ARGV[3 * n - 1]), ARGV[3 * n]
  local owned, published = owns(attempt, job, 'published')
  if not owned then
    results[n] = 0
  else
    if seq > tonumber(published or '0') then
      redis.call('HSET', job, 'published', seq, 'progress', attempt)
      redis.call('XADD', out, '*', 'type', 'delta', 'data', cjson.encode({text = text}))
    end
    results[n] = 1
  end
end
return results
