-- Take over the deliveries of one bot whose lease has lapsed (the candidates the caller read from the index), as
-- XAUTOCLAIM takes over a silent worker's entries: each is checked again here, so two claimers never take one.
-- Caller: komt_bot.queue.delivery_calls.ClaimDeliveries. K: index, then one record per candidate; ARGV from TAIL:
-- the candidates' job ids. An index entry whose record is gone (expired with its job) is removed.
-- Returns {job id, HGETALL of its record...} per delivery taken. Safe to retry: a record this same call (its token)
-- took already is returned again.
local now = server_time()
local lease = seconds_text(now + tonumber(A.lease_seconds))
local taken = {}
for i = 2, #KEYS do
  local job_id = ARGV[TAIL + i - 2]
  local score = redis.call('ZSCORE', K.index, job_id)
  local owner, token = unpack(redis.call('HMGET', KEYS[i], 'owner', 'claim_token'))
  local mine = owner == A.owner and token == A.token
  if not owner then
    redis.call('ZREM', K.index, job_id)
  elseif mine or (score and tonumber(score) <= now) then
    if not mine then
      redis.call('HSET', KEYS[i], 'owner', A.owner, 'lease_until', lease, 'claim_token', A.token)
      redis.call('ZADD', K.index, lease, job_id)
      redis.call('EXPIRE', KEYS[i], A.ttl)
      redis.call('EXPIRE', K.index, A.ttl)
    end
    local record = redis.call('HGETALL', KEYS[i])
    table.insert(record, 1, job_id)
    taken[#taken + 1] = record
  end
end
return taken
