-- Extend the lease of one owner's deliveries of one bot, only those it still holds.
-- Caller: komt_bot.queue.delivery_calls.RenewDeliveries. K: index, then one record per delivery; ARGV from TAIL:
-- the job ids, in the same order. Returns the positions (1-based) of those it no longer holds; a gone record's index
-- entry is removed.
local lease = seconds_text(server_time() + tonumber(A.lease_seconds))
local lost = {}
for i = 2, #KEYS do
  local job_id = ARGV[TAIL + i - 2]
  local owner, platform, bot = unpack(redis.call('HMGET', KEYS[i], 'owner', 'platform', 'bot'))
  if owner == A.owner and platform == A.platform and bot == A.bot then
    redis.call('HSET', KEYS[i], 'lease_until', lease)
    redis.call('ZADD', K.index, lease, job_id)
  else
    lost[#lost + 1] = i - 1
    if not owner then redis.call('ZREM', K.index, job_id) end
  end
end
return lost
