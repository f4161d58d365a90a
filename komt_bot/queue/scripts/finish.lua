-- A worker's attempt ended: the rest of its text, then done (or cancelled) with the finish reason and usage.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 entry id, 3 state, 4 now, 5 job ttl, 6 finish reason, 7 usage json, 8 attempt,
--       9 sequence number of the last text, 10 that text ('' for none)
-- Returns "ok" or "lost" (the worker no longer owns the attempt: it wrote nothing).
if already_ended(ARGV[8]) then return 'ok' end
local owned, published = owns(ARGV[8], KEYS[1], 'published')
if not owned then return 'lost' end
if ARGV[10] ~= '' and tonumber(ARGV[9]) > tonumber(published or '0') then
  redis.call('HSET', KEYS[1], 'published', ARGV[9], 'progress', ARGV[8])
  redis.call('XADD', KEYS[2], '*', 'type', 'delta', 'data', cjson.encode({text = ARGV[10]}))
end
redis.call('HSET', KEYS[1], 'finish_reason', ARGV[6], 'usage', ARGV[7])
end_job(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], 'done',
  cjson.encode({finish_reason = ARGV[6], usage = cjson.decode(ARGV[7])}))
return 'ok'
