-- wrk script: POSTs bank commands to `annals serve`, spread uniformly over AGGREGATES accounts
-- (default 10,000): deposits, and every third command a withdrawal (some are rejected with
-- 422 for insufficient funds, as in the runtime's bank benchmark).
-- Usage: wrk -t2 -c64 -d20s --latency -s app/bench/commands.lua http://127.0.0.1:8080
local aggregates = tonumber(os.getenv("AGGREGATES") or "10000")
local counter = 0
local statuses = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() + id * 7919)
  wrk.headers["Content-Type"] = "application/json"
  sent = 0
  codes = {}
end

function request()
  sent = sent + 1
  local account = math.random(0, aggregates - 1)
  local body
  if sent % 3 == 0 then
    body = '{"type":"Withdraw","amount":150}'
  else
    body = '{"type":"Deposit","amount":100}'
  end
  return wrk.format("POST", "/v1/accounts/acct-" .. account .. "/commands", nil, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("requests/s: %.0f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("non-2xx/3xx responses: %d (422 business rejections are expected)\n",
    summary.errors.status))
end
