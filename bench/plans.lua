-- wrk script: POST /v1/plans with a different intent per request (cache misses).
local zones = {"UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Africa/Cairo",
  "Australia/Sydney", "Europe/Berlin", "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Auckland"}
local counter = 0
local key = os.getenv("PLANEXEC_BENCH_KEY")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = key
request = function()
  counter = counter + 1
  local zone = zones[(counter % #zones) + 1]
  local body = string.format(
    '{"intent": "what time is it in %s", "context": {"thread": "%s", "n": %d}}',
    zone, tostring(wrk.thread), counter)
  return wrk.format(nil, "/v1/plans", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %.3f %.3f %d\n",
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect
      + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, 0))
end
