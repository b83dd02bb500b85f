-- wrk script for bench/million. Two modes:
--   TB_PAIRS=file   POST /api/auth/manager/access-token, each request as the next line's user:
--                   lines "bearer-token row-id", taken in turn from a random start per thread.
--                   With TB_ONCE=1 each thread takes its own share of the lines and goes through
--                   it once (then repeats its last line): every row is asked for once.
--   TB_GET=path     GET path (e.g. a list page) as the user whose bearer token is TB_TOKEN.
dofile("bench/wrk-common.lua")
local pairs_file = os.getenv("TB_PAIRS")
local get_path = os.getenv("TB_GET")
local once = os.getenv("TB_ONCE")
local lines = {}
local n = 0

if pairs_file then
  for line in io.lines(pairs_file) do
    local bearer, id = line:match("^(%S+) (%S+)$")
    if bearer then lines[#lines + 1] = { "Bearer " .. bearer, '{"persistentTokenId":"' .. id .. '"}' } end
  end
end

init = function(args)
  if once then
    lines = share(lines, 2)
    return
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 1000)
  if #lines > 0 then n = math.random(#lines) end
end

request = function()
  if get_path then
    return wrk.format("GET", get_path, { ["Authorization"] = "Bearer " .. os.getenv("TB_TOKEN") })
  end
  if once then n = math.min(n + 1, #lines) else n = (n % #lines) + 1 end
  local l = lines[n]
  return wrk.format("POST", "/api/auth/manager/access-token",
    { ["Authorization"] = l[1], ["Content-Type"] = "application/json" }, l[2])
end
