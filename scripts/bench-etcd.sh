#!/usr/bin/env bash
# Side-by-side write benchmark with an external client: wrk POSTs a ~1 KiB pod to skiff
# over HTTPS (authenticated, every write durable), then the same wrk PUTs the same body
# into etcd (Debian's etcd-server, through its v3 JSON gateway) on the same machine, in
# the same run, then POSTs it again to a second skiff whose objects are in that etcd
# (`--datastore-endpoint`). Prints creates/s and p99 of each and the ratios.
#   WRK_THREADS (2), WRK_CONNECTIONS (64), WRK_SECONDS (10)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
threads="${WRK_THREADS:-2}" conns="${WRK_CONNECTIONS:-64}" secs="${WRK_SECONDS:-10}"

cargo build --release --bin skiff
bin="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}/release/skiff"

work="$(mktemp -d)"
cleanup() {
    for p in "${skiff_pid:-}" "${skiff_etcd_pid:-}" "${etcd_pid:-}"; do
        [ -n "$p" ] && { kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }
    done
    rm -rf "$work"
}
trap cleanup EXIT

# The pod every request writes (names made unique per request by the Lua script).
pod='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"NAME","namespace":"default","labels":{"app":"bench","tier":"web","release":"r1"},"annotations":{"bench.skiff.io/note":"a pod of about one kilobyte, as a client would post it"}},"spec":{"containers":[{"name":"app","image":"skiff/busybox:latest","imagePullPolicy":"IfNotPresent","command":["sh","-c","echo hello; sleep 3600"],"ports":[{"containerPort":8080,"name":"http","protocol":"TCP"}],"env":[{"name":"MODE","value":"bench"},{"name":"LEVEL","value":"3"}],"resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"cpu":"200m","memory":"128Mi"}},"readinessProbe":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":5}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"nodeSelector":{"kubernetes.io/os":"linux"}}}'

# One skiff: the API and the store alone (no scheduler or controllers adding writes), HTTPS.
cat > "$work/skiff.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
[scheduler]
enabled = false
[controllers]
enabled = []
TOML
"$bin" up --config "$work/skiff.toml" --data-dir "$work/skiff" > "$work/skiff.out" 2> "$work/skiff.log" &
skiff_pid=$!
for _ in $(seq 1 200); do grep -q "ready at" "$work/skiff.out" 2>/dev/null && break; sleep 0.1; done
url="$(sed -n 's/.*ready at \(https:[^ ]*\).*/\1/p' "$work/skiff.out" | head -1)"
[ -n "$url" ] || { cat "$work/skiff.log" >&2; echo "skiff did not start" >&2; exit 1; }
token="$(awk -F, '$2=="admin"{print $1; exit}' "$work/skiff/pki/tokens.csv")"

cat > "$work/skiff.lua" <<LUA
local pod = [[$pod]]
local n = 0
local id = 0
function setup(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  local body = string.gsub(pod, "NAME", "p-" .. tid .. "-" .. n)
  return wrk.format("POST", "/api/v1/namespaces/default/pods",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $token"}, body)
end
LUA

# etcd on loopback, its data on the same disk.
etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    > "$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:23790/health >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$work/etcd.lua" <<LUA
local pod = [[$pod]]
local n = 0
local id = 0
-- base64 as etcd's JSON gateway wants keys and values.
local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function enc(data)
  return ((data:gsub('.', function(x)
    local r, c = '', x:byte()
    for i = 8, 1, -1 do r = r .. (c % 2 ^ i - c % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local value = enc(pod)
function setup(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  local key = enc("/registry/pods/default/p-" .. tid .. "-" .. n)
  return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
    '{"key":"' .. key .. '","value":"' .. value .. '"}')
end
LUA

run() { wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$2" "$1" > "$work/$3.txt" 2>&1; }
rate() { awk '/Requests\/sec/{print $2}' "$work/$1.txt"; }
p99() { awk '$1=="99%"{print $2}' "$work/$1.txt"; }
errors() { awk '/Non-2xx/{print $NF}' "$work/$1.txt"; }

# The same skiff, its objects in that etcd (under a prefix of their own).
"$bin" up --config "$work/skiff.toml" --data-dir "$work/skiff-etcd" \
    --datastore-endpoint http://127.0.0.1:23790 --datastore-prefix /skiff-bench \
    > "$work/skiff-etcd.out" 2> "$work/skiff-etcd.log" &
skiff_etcd_pid=$!
for _ in $(seq 1 200); do grep -q "ready at" "$work/skiff-etcd.out" 2>/dev/null && break; sleep 0.1; done
url_etcd="$(sed -n 's/.*ready at \(https:[^ ]*\).*/\1/p' "$work/skiff-etcd.out" | head -1)"
[ -n "$url_etcd" ] || { cat "$work/skiff-etcd.log" >&2; echo "skiff on etcd did not start" >&2; exit 1; }
token_etcd="$(awk -F, '$2=="admin"{print $1; exit}' "$work/skiff-etcd/pki/tokens.csv")"
sed "s/Bearer $token/Bearer $token_etcd/" "$work/skiff.lua" > "$work/skiff-etcd.lua"

run "$url" "$work/skiff.lua" skiff
run "http://127.0.0.1:23790" "$work/etcd.lua" etcd
run "$url_etcd" "$work/skiff-etcd.lua" skiff-etcd
for s in skiff etcd skiff-etcd; do
    e="$(errors "$s")"
    [ -z "$e" ] || { cat "$work/$s.txt" >&2; echo "$s answered $e non-2xx responses" >&2; exit 1; }
done
echo "wrk -t$threads -c$conns -d${secs}s, ~1 KiB pod body"
printf "%-36s %10s/s   p99 %s\n" "skiff POST pods (HTTPS, durable)" "$(rate skiff)" "$(p99 skiff)"
printf "%-36s %10s/s   p99 %s\n" "etcd $(etcd --version | awk '/etcd Version/{print $3}') PUT (v3 JSON gateway)" "$(rate etcd)" "$(p99 etcd)"
printf "%-36s %10s/s   p99 %s\n" "skiff on that etcd (HTTPS)" "$(rate skiff-etcd)" "$(p99 skiff-etcd)"
awk -v a="$(rate skiff)" -v b="$(rate etcd)" 'BEGIN{printf "skiff / etcd: %.2fx\n", a/b}'
awk -v a="$(rate skiff-etcd)" -v b="$(rate etcd)" 'BEGIN{printf "skiff on etcd / etcd: %.2fx\n", a/b}'
