#!/usr/bin/env bash
# OpenRLHF's remote reward model call, with curl. Start the suite first:
#   grm up --http-port 5000
set -euo pipefail
URL="${1:-http://127.0.0.1:5000/get_reward}"
curl -sS --fail-with-body -X POST "$URL" -H 'Content-Type: application/json' -d '{
  "query":   ["User: What is 2 + 2?\nAssistant: 4", "User: What is 2 + 2?\nAssistant: 5"],
  "prompts": ["User: What is 2 + 2?\nAssistant:", "User: What is 2 + 2?\nAssistant:"],
  "labels":  ["4", "4"]
}'
echo
