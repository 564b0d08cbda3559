-- wrk script for lbproxy's bench: a random 6-digit X-Request-Id on every request (as the
-- assignment's clients send), and one machine-readable result line at the end.
-- Script arguments: a seed, so that threads and wrk processes draw different keys.

local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_no", counter)
end

function init(args)
   local seed = tonumber(args[1]) or os.time()
   math.randomseed(seed * 64 + (thread_no or 0))
end

function request()
   wrk.headers["X-Request-Id"] = tostring(math.random(100000, 999999))
   return wrk.format()
end

-- Latency quantiles in microseconds on a fixed grid of percentiles: enough for the harness to
-- merge the distributions of several wrk processes (wrk 4.1 cannot hand out its histogram).
local GRID = {}
for p = 1, 99 do
   GRID[#GRID + 1] = p
end
for _, p in ipairs({99.5, 99.9, 99.99}) do
   GRID[#GRID + 1] = p
end

function done(summary, latency, requests)
   local parts = {string.format("[0,%d]", latency.min)}
   for _, p in ipairs(GRID) do
      parts[#parts + 1] = string.format("[%s,%d]", tostring(p), latency:percentile(p))
   end
   parts[#parts + 1] = string.format("[100,%d]", latency.max)
   local e = summary.errors
   io.write(string.format(
      'LBBENCH {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"quantiles":[%s]}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
