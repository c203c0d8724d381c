-- Moves dead letters back to their queue, each exactly once (jobs/queues.py).
-- A message still in the XQ is moved once even with two admins requeueing at the same moment.
--
-- KEYS: xq (ZSET of dead ids), xq.msgs (HASH id -> message), queue (LIST), queue.msgs (HASH)
-- ARGV: id, fresh body, id, fresh body, ...
-- Returns: how many messages were moved.
local moved = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('zrem', KEYS[1], id) == 1 then
    redis.call('hdel', KEYS[2], id)
    redis.call('hset', KEYS[4], id, ARGV[i + 1])
    redis.call('rpush', KEYS[3], id)
    moved = moved + 1
  end
end
return moved
