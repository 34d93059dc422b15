#!/usr/bin/env bash
# Run the README's server command verbatim in a fresh copy of the project:
# it must install the package and print "listening on 127.0.0.1:5005" within
# five minutes; then SIGINT stops it, as Ctrl-C would. Used by .ci/run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command=$(python3 - "$root/README.md" <<'PY'
import re, sys
blocks = re.findall(r"```sh\n(.*?)\n```", open(sys.argv[1]).read(), flags=re.S)
print(next(b for b in blocks if "python -m trio_heartbeat serve" in b))
PY
)
if python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 5005))' 2>/dev/null; then
    :
else
    echo "readme_server_check: port 5005 is taken on this machine; not checked"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$root" ls-files -z | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"
echo "readme_server_check: $command"
setsid bash -c "$command" > server.log 2>&1 &
pid=$!
for _ in $(seq 300); do
    if grep -q "^listening on 127.0.0.1:5005$" server.log; then
        kill -INT -- "-$pid"
        wait "$pid" || true
        echo "readme_server_check: listening, and stopped by SIGINT"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 1
done
kill -KILL -- "-$pid" 2>/dev/null || true
echo "readme_server_check: the README's server command did not start:"
cat server.log
exit 1
