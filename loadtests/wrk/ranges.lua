-- One byte range per request at a random offset: `Range: bytes=o-(o+CHUNK-1)`, 0 <= o <= SIZE-CHUNK.
-- Usage: wrk -s ranges.lua URL -- SIZE CHUNK SEED
-- The URL (path and query: the appliance's token, or nginx's plain path) is sent unchanged. Each
-- thread seeds with SEED + its index, so two runs with the same SEED ask for the same offsets.

local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local size, chunk
local headers = {}

function init(args)
   size = tonumber(args[1])
   chunk = tonumber(args[2])
   local seed = tonumber(args[3] or "1")
   math.randomseed(seed + (tid or 0) * 7919)
   if not size or not chunk or chunk < 1 or size < chunk then
      error("usage: wrk -s ranges.lua URL -- SIZE CHUNK SEED")
   end
end

function request()
   local first = math.random(0, size - chunk)
   headers["Range"] = "bytes=" .. first .. "-" .. (first + chunk - 1)
   return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
