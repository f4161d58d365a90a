-- A reply is finished (or stopped): its record and index entry go, fenced by the owner (a record another process
-- holds is left alone). Caller: komt_bot.queue.delivery_calls.EndDelivery. K: record, index.
-- Returns 1 when the record is gone now, 0 when another process holds it. Safe to retry.
local owner, platform, bot = unpack(redis.call('HMGET', K.record, 'owner', 'platform', 'bot'))
if owner and (owner ~= A.owner or platform ~= A.platform or bot ~= A.bot) then return 0 end
redis.call('DEL', K.record)
redis.call('ZREM', K.index, A.job_id)
return 1
