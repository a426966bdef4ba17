"""The drafting side of prompt lookup, without the engine: the n-gram index, the cost and
acceptance estimates, and the choice of how many tokens to verify."""

from __future__ import annotations

import random

import pytest

from gptj_ggml.speculation import PromptLookup, Speculation
from gptj_ggml.speculation.draft_policy import Acceptance, StepCost, best_draft_length, expected_tokens
from gptj_ggml.speculation.ngram_index import NgramIndex


def test_the_longest_matching_ngram_gives_what_followed_its_latest_occurrence():
    index = NgramIndex([1, 2, 3], [5, 6, 7, 8, 1, 6, 7, 9, 4, 6, 7])

    # "6 7" occurred at 1-2 (then 8) and at 5-6 (then 9): the latest wins.
    assert index.lookup(3) == ([9, 4, 6], 2)
    index.append(9)
    # "6 7 9" occurred once, at 5-7.
    assert index.lookup(2) == ([4, 6], 3)


def test_the_tail_never_matches_itself_and_nothing_matches_new_text():
    index = NgramIndex([1, 2], [1, 2, 3])
    assert index.lookup(4) == ([], 0)
    assert NgramIndex([2], [7]).lookup(4) == ([], 0)
    assert index.lookup(0) == ([], 0)


def test_a_repetition_reaching_the_tail_drafts_more_of_it():
    # "4 4" last occurred just before the end: what follows is more of the run, not one token.
    assert NgramIndex([1, 2], [4, 4, 4]).lookup(3) == ([4, 4, 4], 2)
    # A repeated line (period 3) goes on repeating.
    assert NgramIndex([2], [7, 1, 2, 3, 1, 2, 3, 1, 2]).lookup(5) == ([3, 1, 2, 3, 1], 2)
    # A copy from far back is just the text that followed.
    assert NgramIndex([2], [1, 2, 3, 4, 5, 6, 9, 1, 2]).lookup(3) == ([3, 4, 5], 2)


def test_the_step_cost_line_is_fitted_to_the_steps_seen():
    cost = StepCost()
    for _ in range(30):
        for n in (1, 3, 5):
            cost.observe(n, 10.0 + 2.0 * n)
    a, b = cost.line()
    assert a == pytest.approx(10.0, rel=0.05) and b == pytest.approx(2.0, rel=0.05)
    assert cost.ratio(1, 4) == pytest.approx(20.0 / 12.0, rel=0.05)


def test_before_any_larger_step_the_slope_is_the_prior():
    cost = StepCost(prior_slope=0.1)
    for _ in range(10):
        cost.observe(1, 50.0)
    assert cost.ratio(1, 1) == pytest.approx(1.1, rel=1e-6)


def test_acceptance_counts_per_ngram_size_from_an_even_prior():
    acceptance = Acceptance(decay=1.0)
    assert acceptance.rate(3) == 0.5
    acceptance.record(3, accepted=4, rejected=True)  # 4 of 5 tried
    assert acceptance.rate(3) == pytest.approx(5 / 7)
    assert acceptance.rate(1) == 0.5


def test_expected_tokens_of_a_step():
    assert expected_tokens(0.0, 5) == 1.0
    assert expected_tokens(1.0, 5) == 6.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_cheap_verification_drafts_long_and_expensive_or_unlikely_drafts_none():
    cheap, steep = StepCost(prior_slope=0.02), StepCost(prior_slope=1.0)
    for cost in (cheap, steep):
        cost.observe(1, 10.0)
    assert best_draft_length(0.9, 8, cheap) == 8
    assert best_draft_length(0.9, 8, steep) == 0
    assert best_draft_length(0.02, 8, cheap) == 0


def test_drafting_stops_on_text_whose_drafts_fail_and_resumes_where_they_hold():
    """Open-ended text (drafts rarely right) soon gets no verified drafts; text that repeats
    itself gets them again, learned from drafts compared without verifying them."""
    rng = random.Random(0)
    prompt = [rng.randrange(50) for _ in range(400)]
    speculation = Speculation(PromptLookup(max_draft=8), prompt)
    verified_steps = 0
    for step in range(300):
        draft = speculation.draft(limit=8)
        verified_steps += bool(draft)
        produced = [rng.randrange(50)]  # the model never follows the drafts
        speculation.record_step(produced, 1 + len(draft), 10.0 + 0.5 * len(draft))
    late = 0
    for _ in range(100):
        draft = speculation.draft(limit=8)
        late += bool(draft)
        speculation.record_step([rng.randrange(50)], 1 + len(draft), 10.0 + 0.5 * len(draft))
    assert late <= 3

    # Now the text repeats a phrase: the unverified drafts prove right, and drafting comes back.
    phrase = [60, 61, 62, 63, 64, 65, 66, 67]
    speculation.index.extend(phrase)
    accepted_after = 0
    for _ in range(40):
        draft = speculation.draft(limit=8)
        position = len(speculation.index.tokens)
        tail = speculation.index.tokens[-1]
        following = phrase[(phrase.index(tail) + 1) % len(phrase)] if tail in phrase else phrase[0]
        if draft:
            produced = []
            for guess in draft:
                produced.append(following)
                if guess != following:
                    break
                following = phrase[(phrase.index(following) + 1) % len(phrase)]
            else:
                produced.append(following)
            accepted_after += len(produced) - 1
        else:
            produced = [following]
        assert position == len(speculation.index.tokens)
        speculation.record_step(produced, 1 + len(draft), 10.0 + 0.5 * len(draft))
    assert accepted_after > 20
    assert speculation.accepted <= speculation.drafted


def test_without_adaptation_every_match_is_drafted_in_full():
    speculation = Speculation(PromptLookup(max_draft=4, adaptive=False), [1, 2, 3, 4, 5, 6, 1, 2])
    assert speculation.draft(limit=8) == [3, 4, 5, 6]
    assert speculation.draft(limit=2) == [3, 4]
