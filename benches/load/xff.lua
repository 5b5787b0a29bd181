-- Many clients behind a trusted proxy: every request carries X-Forwarded-For with one address
-- from a pool of n (first script argument, default 10000) addresses 10.a.b.c, picked uniformly at
-- random with a fixed seed, so the gateway and nginx see the same sequence.
-- Usage: wrk ... -s xff.lua http://127.0.0.1:PORT/small -- 10000
local requests = {}
local n = 10000

function init(args)
   n = tonumber(args[1] or "10000")
   math.randomseed(20240601)
   for i = 1, n do
      local headers = {}
      for k, v in pairs(wrk.headers) do
         headers[k] = v
      end
      local a = math.floor(i / 65536) % 256
      local b = math.floor(i / 256) % 256
      local c = i % 256
      headers["X-Forwarded-For"] = "10." .. a .. "." .. b .. "." .. c
      requests[i] = wrk.format(nil, nil, headers)
   end
end

function request()
   return requests[math.random(n)]
end
