-- Random byte ranges over many files: each request picks a path from PATHS_FILE and asks for
-- `Range: bytes=o-(o+CHUNK-1)` at a random offset: a 1 MiB range (from one of the first NBIG paths,
-- which must be files of at least 1 MiB) with probability LARGE_SHARE, else a 16 KiB range (any path,
-- every file at least 16 KiB).
-- Usage: wrk -s scale.lua http://127.0.0.1:PORT/ -- PATHS_FILE NBIG LARGE_SHARE SEED
-- PATHS_FILE: one "SIZE PATH?QUERY" line per file (pre-signed paths, see loadtests/oca_scale.py).
-- Each thread seeds with SEED + its index, so runs with the same SEED send the same requests.

local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local paths, nbig, large_share = {}, 0, 0
local SMALL, LARGE = 16384, 1048576
local headers = {}

function init(args)
   local file = io.open(args[1] or "", "r")
   if not file then
      error("usage: wrk -s scale.lua URL -- PATHS_FILE NBIG LARGE_SHARE SEED")
   end
   for line in file:lines() do
      local size, path = line:match("^(%d+) (%S+)$")
      if size then
         paths[#paths + 1] = {path, tonumber(size)}
      end
   end
   file:close()
   nbig = tonumber(args[2])
   large_share = tonumber(args[3])
   math.randomseed(tonumber(args[4] or "1") + (tid or 0) * 7919)
   if #paths == 0 or not nbig or nbig < 1 or nbig > #paths or not large_share then
      error("scale.lua: no paths, or NBIG/LARGE_SHARE missing or out of range")
   end
end

function request()
   local p, chunk
   if math.random() < large_share then
      p, chunk = paths[math.random(1, nbig)], LARGE
   else
      p, chunk = paths[math.random(1, #paths)], SMALL
   end
   local first = math.random(0, p[2] - chunk)
   headers["Range"] = "bytes=" .. first .. "-" .. (first + chunk - 1)
   return wrk.format("GET", p[1], headers)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
