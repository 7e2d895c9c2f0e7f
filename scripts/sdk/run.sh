#!/usr/bin/env bash
# The platforms' official Python SDKs (scripts/sdk/requirements.txt, pinned), unchanged,
# against a real `kiln serve` on the bundled model: fal-client over TLS (self-signed
# certificate trusted through SSL_CERT_FILE), runware over WebSocket, wavespeed over HTTP.
# Usage: bash scripts/sdk/run.sh [path/to/kiln]   (default target/debug/kiln)
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=${1:-target/debug/kiln}
[ -x "$kiln" ] || { echo "FATAL: $kiln not built; run cargo build first" >&2; exit 1; }
command -v openssl >/dev/null || { echo "FATAL: openssl missing; apt-get install openssl" >&2; exit 1; }
venv=${KILN_SDK_VENV:-target/sdk-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "FATAL: python3 -m venv failed; apt-get install python3-venv" >&2; exit 1; }
fi
"$venv/bin/pip" install -q -r scripts/sdk/requirements.txt || { echo "FATAL: pip install of the SDKs failed" >&2; exit 1; }

work=$(mktemp -d)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); https_port=$(free_port); run_port=$(free_port)
key=sdk-test-key
printf 'keys = ["%s"]\n' "$key" > "$work/kiln.toml"
"$kiln" serve --data "$work/data" --config "$work/kiln.toml" --listen "127.0.0.1:$http_port" \
  --tls-listen "127.0.0.1:$https_port" --fal-run-listen "127.0.0.1:$run_port" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$work/serve.log" >&2; echo "FATAL: kiln serve exited" >&2; exit 1; }
  sleep 0.2
done

export KILN_TEST_KEY=$key KILN_HTTP=127.0.0.1:$http_port KILN_HTTPS=127.0.0.1:$https_port
export KILN_FAL_RUN=127.0.0.1:$run_port KILN_SDK_WORK=$work SSL_CERT_FILE=$work/cert.pem
status=0
for sdk in fal runware wavespeed; do
  echo "== $sdk SDK"
  if ! timeout 600 "$venv/bin/python" "scripts/sdk/${sdk}_sdk.py"; then
    echo "FAILED: $sdk SDK against kiln" >&2; status=1
  fi
done
[ $status -eq 0 ] || tail -n 40 "$work/serve.log" >&2
exit $status
