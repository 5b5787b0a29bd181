-- Spread requests over /c/0 .. /c/{n-1} (n = first script argument, default 1000), uniformly at
-- random with a fixed seed, so the gateway and nginx see the same sequence.
-- Usage: wrk ... -s spread.lua http://127.0.0.1:PORT/ -- 1000
local requests = {}
local n = 1000

function init(args)
   n = tonumber(args[1] or "1000")
   math.randomseed(20240601)
   for i = 0, n - 1 do
      requests[i + 1] = wrk.format(nil, "/c/" .. i)
   end
end

function request()
   return requests[math.random(n)]
end
