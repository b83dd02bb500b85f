-- wrk script: the provider's own refresh rate, the baseline for the broker's forced refresh.
-- POSTs refresh grants (as the broker's client) to TB_TOKEN_PATH, round-robin over the refresh
-- tokens in TB_REFRESH_TOKENS, each wrk thread over its own share (as access-token.lua does with
-- rows).
dofile("bench/wrk-common.lua")

local all = {}
for t in string.gmatch(os.getenv("TB_REFRESH_TOKENS") or "", "[^,]+") do all[#all + 1] = t end
local mine = {}
local n = 0

init = function(args)
  mine = share(all, tonumber(os.getenv("TB_THREADS") or "2"))
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
-- The broker's client: TB_CLIENT_BASIC (base64 of id:secret), else the test provider's
-- token-broker:broker-secret.
wrk.headers["Authorization"] = "Basic " .. (os.getenv("TB_CLIENT_BASIC") or "dG9rZW4tYnJva2VyOmJyb2tlci1zZWNyZXQ=")

request = function()
  n = n + 1
  local body = "grant_type=refresh_token&refresh_token=" .. mine[(n % #mine) + 1]
  return wrk.format(nil, os.getenv("TB_TOKEN_PATH"), nil, body)
end
