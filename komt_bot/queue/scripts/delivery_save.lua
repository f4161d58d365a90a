-- Record how far a reply has been written (and where it is, when that changed), fenced by its owner: a process
-- whose delivery was taken over (or released, or ended) writes nothing.
-- Caller: komt_bot.queue.delivery_calls.SaveDelivery. K: record. Returns 1 when written, else 0.
-- Safe to retry: the same values again.
if redis.call('HGET', K.record, 'owner') ~= A.owner then return 0 end
redis.call('HSET', K.record, 'messages', A.messages, 'shown_entry', A.shown_entry)
if A.place ~= '' then redis.call('HSET', K.record, 'place', A.place) end
return 1
