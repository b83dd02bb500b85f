-- wrk script: POST /api/auth/manager/access-token round-robin over the rows in TB_IDS,
-- as the user whose bearer token is TB_TOKEN. Each wrk thread takes its own share of the rows
-- (TB_THREADS threads), so with as many connections as rows no two requests in flight ask for
-- the same row: a forced refresh is then one provider call per request, not a shared one.
-- With TB_BEARERS=file (one bearer token per line), each request carries the next token of the
-- file instead (fresh-bearer load: a signature check per request until the file runs out).
dofile("bench/wrk-common.lua")

local all = {}
for id in string.gmatch(os.getenv("TB_IDS") or "", "[^,]+") do all[#all + 1] = id end
local ids, bearers = {}, {}
local n = 0

init = function(args)
  local parts = tonumber(os.getenv("TB_THREADS") or "2")
  ids = share(all, parts)
  local file = os.getenv("TB_BEARERS")
  if file then
    local lines = {}
    for line in io.lines(file) do lines[#lines + 1] = "Bearer " .. line end
    bearers = share(lines, parts)
  end
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TB_TOKEN") or "")

request = function()
  n = n + 1
  local body = '{"persistentTokenId":"' .. ids[(n % #ids) + 1] .. '"}'
  if #bearers > 0 then
    local headers = { ["Content-Type"] = "application/json", ["Authorization"] = bearers[(n % #bearers) + 1] }
    return wrk.format(nil, nil, headers, body)
  end
  return wrk.format(nil, nil, nil, body)
end
