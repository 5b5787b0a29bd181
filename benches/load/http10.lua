-- HTTP/1.0 requests without keep-alive, the way ApacheBench (`ab` without -k) sends them: one
-- request per downstream connection, which the proxy closes after its answer. A proxy that sent
-- them on as HTTP/1.0 would also open a new upstream TLS connection per request.
-- Usage: wrk ... -s http10.lua http://127.0.0.1:PORT/small
local req
function init(args)
   req = wrk.format():gsub(" HTTP/1%.1\r\n", " HTTP/1.0\r\n", 1)
end
function request()
   return req
end
