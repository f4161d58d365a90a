-- Open a reply's delivery record, or refresh it when this owner holds it already (a retry); one another process
-- holds (or one released for a successor) is left alone.
-- Caller: komt_bot.queue.delivery_calls.OpenDelivery. K: record, index. Returns 1 when this owner holds it, else 0.
local now = server_time()
local owner = redis.call('HGET', K.record, 'owner')
if owner and owner ~= A.owner then return 0 end
local lease = now + tonumber(A.lease_seconds)
if not owner then
  redis.call('HSET', K.record, 'platform', A.platform, 'bot', A.bot, 'messages', A.messages, 'shown_entry', '',
    'created', seconds_text(now))
end
redis.call('HSET', K.record, 'owner', A.owner, 'lease_until', seconds_text(lease), 'place', A.place)
redis.call('EXPIRE', K.record, A.ttl)
redis.call('ZADD', K.index, seconds_text(lease), A.job_id)
-- The index outlives every record in it: a bot nobody runs any more leaves nothing behind for good.
redis.call('EXPIRE', K.index, A.ttl)
return 1
