-- Shared by the wrk scripts here (loaded with dofile from the repository's root).

-- Numbers each wrk thread (setup runs once per thread, in the main script state), so a thread
-- can take its own share of a list: `part` is set in each thread's state.
local threads = 0
setup = function(thread)
  thread:set("part", threads)
  threads = threads + 1
end

-- The items of `list` that belong to this thread, one in `parts` (all of them if none do).
function share(list, parts)
  local mine = {}
  for i, item in ipairs(list) do
    if (i - 1) % parts == (part or 0) then mine[#mine + 1] = item end
  end
  if #mine == 0 then return list end
  return mine
end

-- One machine-readable BENCH line, read by bench/run and bench/million.
done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH requests=%d non2xx=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
