-- wrk: GET a random account of a random tenant, each with its own key. Paths come from bench/targets.lua.
local targets = dofile(os.getenv("LEDGER_BENCH_TARGETS"))
math.randomseed(os.time())
request = function()
  local t = targets[math.random(#targets)]
  return wrk.format("GET", t[1], { ["Authorization"] = "Bearer " .. t[2] })
end
