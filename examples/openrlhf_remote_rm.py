"""OpenRLHF remote reward model: post what OpenRLHF posts to the suite's /get_reward.

    grm up --http-port 5000          # in another terminal
    python examples/openrlhf_remote_rm.py [http://127.0.0.1:5000/get_reward]

In OpenRLHF itself: `--remote_rm_url http://127.0.0.1:5000/get_reward`.
Standard library only (no OpenRLHF needed).
"""

import json
import sys
import urllib.error
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000/get_reward"
prompt = "User: What is the capital of France?\nAssistant:"
body = {
    "query": [prompt + " Paris.", prompt + " Lyon, I think.", prompt + " It is Paris."],
    "prompts": [prompt, prompt, prompt],
    "labels": ["Paris", "Paris", "Paris"],
}
request = urllib.request.Request(
    url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
)
print("POST", url, json.dumps(body, indent=2))
try:
    with urllib.request.urlopen(request, timeout=600) as reply:
        print(reply.status, json.dumps(json.load(reply), indent=2))
except urllib.error.HTTPError as exc:  # 503/400: some item failed; never a reward of 0
    print(exc.code, exc.read().decode())
    sys.exit(1)
