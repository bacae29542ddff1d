-- wrk script for bench/worstcase.py: GET the paths of a list file in turn, over and over, each thread starting
-- at its own offset, and count the blackbox answers that report probe_success 1.
--
--   wrk -t T -c C -d SECONDS -s bench/blackbox.lua http://127.0.0.1:PORT -- PATHS_FILE T
--
-- done() prints one line "WRK_RESULT {json}" that the bench parses.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("GET", line)
  end
  index = math.floor(id * #requests / tonumber(args[2]))
  ok, failed = 0, 0
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  if status == 200 and string.find(body, "\nprobe_success 1\n", 1, true) then
    ok = ok + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local good, bad = 0, 0
  for _, thread in ipairs(threads) do
    good = good + thread:get("ok")
    bad = bad + thread:get("failed")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"ok": %d, "failed": %d, "requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, "latency_p50_us": %d}\n',
    good, bad, summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50)))
end
