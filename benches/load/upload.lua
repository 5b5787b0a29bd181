-- Uploads: every request is a POST with a body of n bytes (first script argument, default
-- 131072), sent with a Content-Length. Over the gateway's 64 KiB read-whole limit, so the gateway
-- streams it to the target while it relays the answer; nginx reads it whole first (its default
-- proxy_request_buffering, with a body buffer large enough that nothing goes to disk).
-- Usage: wrk ... -s upload.lua http://127.0.0.1:PORT/upload -- 131072
function init(args)
   local n = tonumber(args[1] or "131072")
   wrk.method = "POST"
   wrk.body = string.rep("u", n)
   wrk.headers["Content-Type"] = "application/octet-stream"
end
