#!/bin/sh
# The demo's one-shot seeding (docker compose --profile demo): registers the integration `demo`
# for the simulator's app, binds it to the echo expert, sends one robot message through the
# simulator, and prints the answer the gateway delivered back to the simulator.
set -eu

admin=${DEMO_ADMIN_URL:-http://ingress:8081}
public=${DEMO_INGRESS_URL:-http://ingress:8080}
sim=${DEMO_SIM_URL:-http://dingtalk-sim:9300}
app_key=${DEMO_APP_KEY:-dingdemoapp}
app_secret=${DEMO_APP_SECRET:?DEMO_APP_SECRET must match the simulator's SIM_APPS}

if [ -z "${ADMIN_TOKEN:-}" ]; then
  echo "demo-seed: ADMIN_TOKEN is not set, so the admin API refuses every call."
  echo "  Set it (e.g. in .env: ADMIN_TOKEN=\$(openssl rand -hex 24)) and run the demo again."
  exit 1
fi

wait_for() {
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$1" && return 0
    sleep 1
  done
  echo "demo-seed: $1 did not answer within 120 s" >&2
  exit 1
}
wait_for "$admin/readyz"
wait_for "$sim/_sim/health"

curl -fsS -X PUT "$admin/api/dingtalk/integrations/demo" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
  -d "{\"client_id\":\"$app_key\",\"client_secret\":\"$app_secret\",\"xpert_id\":\"echo\",\"name\":\"Compose demo\",\"preferred_language\":\"en\"}" \
  -o /dev/null
echo "demo-seed: integration demo registered (expert: the echo expert)"

curl -fsS -X DELETE "$sim/_sim/calls" -o /dev/null || true
dingtalk-sim send-robot-message --url "$public/api/dingtalk/webhook/demo" --secret "$app_secret" \
  --robot-code "$app_key" --sim-url "$sim" --text "hello from docker compose"

for _ in $(seq 1 60); do
  answer=$(curl -fsS "$sim/_sim/messages" || true)
  case "$answer" in
    *"echo #"*"hello from docker compose"*)
      echo "demo-seed: the gateway answered through the simulator:"
      echo "$answer"
      exit 0
      ;;
  esac
  sleep 1
done
echo "demo-seed: no answer reached the simulator within 60 s; see the dispatcher and notifier logs" >&2
exit 1
