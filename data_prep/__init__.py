"""Making offline datasets in the scaled_ql format (``scaled_ql.data.schema``).

``rollout``: play the games in ALE with a random or epsilon-greedy behaviour policy.
"""
