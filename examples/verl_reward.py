"""verl custom reward function: call compute_score the way verl's reward manager does.

    grm up                            # in another terminal
    GRM_TARGET=127.0.0.1:50051 python examples/verl_reward.py

In verl: custom_reward_function.path=<this repo>/services/grm/integrations/verl.py,
custom_reward_function.name=compute_score (GRM_TARGET set for the reward workers); the prompt
must be in the dataset's extra_info (e.g. extra_info["question"]). verl is not needed here.
"""

from grm.integrations.verl import compute_score, compute_score_batch

question = {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?"}
for answer in ["48 + 24 = 72. The answer is 72.", "48 + 48 = 96. The answer is 96."]:
    print(compute_score("openai/gsm8k", answer, "72", extra_info=question), answer)

# reward_model.reward_manager=batch: one call, responses of one prompt scored together.
print(
    compute_score_batch(
        ["openai/gsm8k"] * 2,
        ["The answer is 72.", "The answer is 96."],
        ["72", "72"],
        [question, question],
    )
)
