-- Dramatiq's `fetch` command (dramatiq/brokers/redis/dispatch.lua), skipping
-- ids whose message body was deleted: the lines of a cancelled or expired
-- batch (jobs/batches.py end_lines) are dropped here, in Redis, instead of
-- each costing a worker a delivery and a no-op claim.
--
-- KEYS[1] namespace; ARGV: queue name, worker id, now (ms), prefetch, most ids to skip per call.
local namespace = KEYS[1]
local queue_name, worker_id, timestamp = ARGV[1], ARGV[2], ARGV[3]
local prefetch, max_skip = tonumber(ARGV[4]), tonumber(ARGV[5])

redis.call("zadd", namespace .. ":__heartbeats__", timestamp, worker_id)
local queue = namespace .. ":" .. queue_name
local messages = queue .. ".msgs"
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name

local found, skipped = {}, 0
while #found < prefetch and skipped < max_skip do
    local message_id = redis.call("lpop", queue)
    if not message_id then
        break
    end
    local body = redis.call("hget", messages, message_id)
    if body then
        redis.call("sadd", acks, message_id)
        found[#found + 1] = body
    else
        skipped = skipped + 1
    end
end
return found
