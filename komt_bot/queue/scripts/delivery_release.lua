-- Hand deliveries over (a deploy): each one still held by this owner is left without one, its lease lapsed now, so
-- the next claim of any process takes it at once. Caller: komt_bot.queue.delivery_calls.ReleaseDeliveries.
-- KEYS: per delivery, its record then its bot's index; ARGV from TAIL: the job ids. Returns how many it released.
local now = seconds_text(server_time())
local released = 0
for i = 1, #KEYS, 2 do
  local job_id = ARGV[TAIL + (i - 1) / 2]
  if redis.call('HGET', KEYS[i], 'owner') == A.owner then
    redis.call('HSET', KEYS[i], 'owner', '', 'lease_until', now)
    redis.call('ZADD', KEYS[i + 1], now, job_id)
    released = released + 1
  end
end
return released
