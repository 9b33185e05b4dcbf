-- wrk script for bench/http_bench.py (plain wrk 4.x; LuaJIT).
--
-- Environment, read when the script loads (wrk runs it once in its main state and once per thread):
--   BENCH_TOKENS=path    one access token per line; each request sends the next one as the
--                        sAccessToken cookie, cycling (otherwise the request is static, with the
--                        headers given on wrk's command line: wrk's fast path)
--   BENCH_OFFSET=n       index of the first token used (so consecutive runs keep cycling)
--   BENCH_RATE=r         pacing, an approximation of wrk2's -R: request starts are scheduled r per
--                        second for the thread (one slot after another, whichever connection is
--                        free; a slot missed by less than 1 ms is still taken, since wrk's timers
--                        are that coarse, but no older one: no catch-up burst when the server falls
--                        behind); through wrk's delay() hook, which waits whole milliseconds;
--                        wrk measures latency from the write, so the wait is not counted. Needs
--                        LuaJIT's ffi (clock_gettime); without it, each connection waits
--                        BENCH_CONNECTIONS / r seconds after each answer.
-- wrk corrects every latency for coordinated omission before done() reads it (stats_correct): a
-- request slower than a connection's mean interval (run time over its requests) adds a sample at
-- each interval below its latency, so a stall weighs as the requests it held up, paced or not.
-- At the end it prints one line "BENCH_JSON {...}" with counts, errors and latency percentiles (us).

local tokens_file = os.getenv("BENCH_TOKENS")
local rate = tonumber(os.getenv("BENCH_RATE") or "")

if tokens_file and tokens_file ~= "" then
   local tokens = {}
   for line in io.lines(tokens_file) do
      if line ~= "" then
         tokens[#tokens + 1] = line
      end
   end
   if #tokens == 0 then
      error("no tokens in " .. tokens_file)
   end
   local index = tonumber(os.getenv("BENCH_OFFSET") or "0") or 0
   local count = #tokens

   function request()
      index = index + 1
      local headers = {}
      for name, value in pairs(wrk.headers) do
         headers[name] = value
      end
      headers["Cookie"] = "sAccessToken=" .. tokens[(index % count) + 1]
      return wrk.format(nil, nil, headers)
   end
end

if rate and rate > 0 then
   local interval_ms = 1000 / rate
   local have_ffi, ffi = pcall(require, "ffi")
   if have_ffi then
      ffi.cdef [[
         typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
         int clock_gettime(int clock_id, bench_timespec *tp);
      ]]
      local ts = ffi.new("bench_timespec")
      local function now_ms()
         ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
         return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
      end
      local next_slot = nil

      function delay()
         local now = now_ms()
         -- slots missed by under a millisecond are wrk's timer granularity, not a server behind
         -- (dropping them held a 33k pace to 92%); older ones are dropped
         if next_slot == nil or next_slot < now - 1 then
            next_slot = now - 1
         end
         local wait = math.max(0, next_slot - now)
         next_slot = next_slot + interval_ms
         -- wrk waits whole milliseconds: dither so that the average wait is right
         local whole = math.floor(wait)
         if math.random() < wait - whole then
            whole = whole + 1
         end
         return whole
      end
   else
      local per_connection = interval_ms * (tonumber(os.getenv("BENCH_CONNECTIONS") or "1") or 1)

      function delay()
         local whole = math.floor(per_connection)
         if math.random() < per_connection - whole then
            return whole + 1
         end
         return whole
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
end
