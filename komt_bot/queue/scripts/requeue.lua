-- Put a claimed job back at the head of the queue (drain), ahead of every new job. No strike: the worker stopped.
-- KEYS: the job keys (see _common.lua)
-- ARGV: 1 job id, 2 entry id, 3 error ('' for none), 4 requeued idle ms, 5 attempt
-- Returns "ok" or "lost".
if not owns(ARGV[5]) then return 'lost' end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
requeue_entry(ARGV[1], ARGV[2], ARGV[4])
return 'ok'
