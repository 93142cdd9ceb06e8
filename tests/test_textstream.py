"""Streamed text: whole characters only; stop strings cut exactly, even across tokens."""

from shard.verifier.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.push(p) for p in pieces) + stream.flush()


def test_multibyte_character_split_across_tokens() -> None:
    s = TextStream([])
    euro = "€".encode()
    assert s.push(b"a" + euro[:1]) == "a"
    assert s.push(euro[1:]) == "€"
    assert s.flush() == ""


def test_stop_string_across_tokens_is_cut_and_never_sent() -> None:
    s = TextStream(["###"])
    out = [s.push(p) for p in [b"hello #", b"#", b"# world"]]
    assert out == ["hello ", "", ""]
    assert s.stopped and s.flush() == ""


def test_held_back_prefix_is_released_when_it_cannot_be_a_stop() -> None:
    s = TextStream(["</end>"])
    assert s.push(b"a </e") == "a "
    assert s.push(b"x") == "</ex"
    assert feed(TextStream(["</end>"]), [b"tail </en"]) == "tail </en"


def test_earliest_of_several_stops_wins() -> None:
    assert feed(TextStream(["C", "B"]), [b"xxAByyC"]) == "xxA"
