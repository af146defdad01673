"""The load profile's first-audio stages and token transit, on made-up records."""

from benchmarks.measure import Answer
from benchmarks.stages import client_stages, transit_by_index, ttfa_stages


def _answer(ctx: str, first_token_at: float, first_audio_at: float) -> Answer:
    return Answer("t", first_token_at=first_token_at, first_audio_at=first_audio_at, context_id=ctx)


def _request(ctx: str, text_at: float, audio_at: float, first_text: str) -> dict:
    return {
        "client_req_id": ctx,
        "texts": [first_text, "more "],
        "text_times": [text_at, text_at + 0.5],
        "first_audio_at": audio_at,
    }


def test_stages_add_up_to_the_ttfa_and_match_answers_by_request_id() -> None:
    answers = [_answer("a", 10.0, 11.0), _answer("b", 20.0, 20.6), _answer("lost", 30.0, 31.0)]
    requests = [
        _request("b", 20.2, 20.35, "two words <flush>"),
        _request("a", 10.5, 10.65, "one two three <flush>"),
        _request("other", 0.0, 0.1, "x "),
    ]
    out = ttfa_stages(answers, requests)
    assert out["matched"] == 2
    assert round(out["to_first_text"]["median_ms"]) == 350  # 500 and 200
    assert round(out["server"]["median_ms"]) == 150
    assert round(out["to_pipeline"]["median_ms"]) == 300  # 350 and 250
    assert out["first_text_words_median"] == 2.5  # the flush tag is not a word


def test_transit_is_measured_from_each_token_s_due_time() -> None:
    # Tokens due every 0.1 s from the first; the service started on them 0, 20, 40 ms late.
    a = _answer("a", 5.0, 6.0)
    assert transit_by_index([(a, [5.0, 5.12, 5.24])], rate=10.0) == [0, 20, 40]


def test_the_token_that_let_the_first_text_go_is_found_from_its_length() -> None:
    tokens = ["I", " check", "ed", " every", " resta", "urant"]
    # "I checked " goes once " every" starts: token 3, due 3 / 33 s after the first.
    a = _answer("a", 1.0, 2.0)
    times = [1.0 + i * 0.05 for i in range(len(tokens))]
    req = _request("a", times[3] + 0.002, 1.5, "I checked <flush>")
    out = client_stages([(a, times)], [req], tokens, rate=33.0)
    assert out["matched"] == 1
    assert round(out["service_to_wire_median_ms"]) == 2
    assert round(out["token_transit_median_ms"]) == round(1000 * (0.15 - 3 / 33))
