-- wrk script: the same POST every time. TB_BODY is the body, TB_CONTENT_TYPE its type, and
-- TB_AUTHORIZATION (optional) the Authorization header. Used by bench/workload.
dofile("bench/wrk-common.lua")

wrk.method = "POST"
wrk.body = os.getenv("TB_BODY") or ""
wrk.headers["Content-Type"] = os.getenv("TB_CONTENT_TYPE") or "application/json"
local authorization = os.getenv("TB_AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
