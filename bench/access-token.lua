-- wrk script: POST /api/auth/manager/access-token round-robin over the rows in TB_IDS,
-- as the user whose bearer token is TB_TOKEN. Prints one machine-readable BENCH line.
local ids = {}
for id in string.gmatch(os.getenv("TB_IDS") or "", "[^,]+") do ids[#ids + 1] = id end
local n = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TB_TOKEN") or "")

request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]
  return wrk.format(nil, nil, nil, '{"persistentTokenId":"' .. id .. '"}')
end

done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH requests=%d non2xx=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
