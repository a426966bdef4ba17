"""Speculative decoding by prompt lookup: several tokens per step for one sequence.

The guesses come from the text itself (:mod:`.ngram_index`: what followed the latest earlier
occurrence of the sequence's last few tokens), the engine verifies them in one evaluation
(``Session.evaluate_and_verify``: each position an ordinary draw, so the output is what it
would be without speculation), and :mod:`.draft_policy` decides from what the guesses and the
steps have cost so far how many to try, or none.
"""

from .prompt_lookup import PromptLookup, Speculation, lookup_options

__all__ = ["PromptLookup", "Speculation", "lookup_options"]
