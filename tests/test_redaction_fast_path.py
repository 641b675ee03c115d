"""The fast paths of redaction give exactly what the full rules give.

`Redactor._quiet` lets clean text skip the rule chain, and the walk handles common leaves
inline. `Reference` below is a Redactor whose `_quiet` never answers yes, so every string takes
the full rule chain, as before the fast path existed. Hypothesis compares the two (return
values and errors, through `redact`, `redact_text` and `Payloads`) on values built to sit on
the edge of every rule and limit.
"""

from __future__ import annotations

import datetime
import math
import uuid
from enum import Enum, IntEnum, StrEnum
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redaction_cases import BENIGN_CASES, PROVIDER_KEYS, SECRET_CASES, UUID

from plandb import jsonutil
from plandb.payload import Payloads
from plandb.redaction import Redactor

pytestmark = pytest.mark.allow_open_connections  # no database here

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


class Reference(Redactor):
    """The full path only: no text is ever judged quiet."""

    def _quiet(self, text: str) -> bool:
        return False


CONFIGS: list[dict[str, Any]] = [
    {},
    {"max_string": 64, "max_items": 2, "max_depth": 2},
    {"max_string": 100, "max_items": 5, "max_depth": 4, "extra_keys": ["ssn", "cardNumber", "1234"]},
    {"extra_patterns": [r"EMP-\d{6}", r"pin=(?P<secret>\d{4})"]},
    {"marker": "***"},
]
PAIRS = [(Redactor(**cfg), Reference(**cfg)) for cfg in CONFIGS]


def outcome(call, *args: Any) -> tuple[str, Any]:
    """A call's return value, or its error type and message: both must match."""
    try:
        return ("ok", call(*args))
    except Exception as exc:
        return ("error", (type(exc), str(exc)))


def reference_json(ref: Reference, value: Any) -> str | None:
    return None if value is None else jsonutil.dumps(ref.redact(value))


# --- building blocks -------------------------------------------------------------------------


class Color(Enum):
    RED = "red"
    TOKEN = "Bearer abcdefgh12345678"


class Level(IntEnum):
    HIGH = 3


class Mode(StrEnum):
    FAST = "fast"


class Sub(str):
    pass


WORDS = ["plan", "the", "split", "upload", "Step", "review", "für", "计划", "🚀", "données"]
# Pieces that sit on or next to a rule's guard: stems in any case, separators, auth words,
# dashes, schemes, runs around MIN_TOKEN_LENGTH, characters whose case mapping is unusual.
EDGES = [
    ":", "=", ">", "<", "--", "-", "-u", "-u ", "://", "@", '"', "'", "\\", "\n", "\t", " ",
    "pass", "PASS", "Passw", "pwd", "secret", "Token", "tokens", "KEY", "key", "monkey",
    "auth", "Author", "cred", "cookie", "sess", "session", "mnemonic", "phrase", "ssn",
    "card", "Number", "1234", "EMP-123456", "pin=1234",
    "Bearer ", "bearer", "BEARER ", "Basic ", "basic", "BASIC", "earer", "asic",
    "private key", "-----BEGIN PRIVATE KEY-----", "PWD=", "/home",
    "x" * 19, "x" * 20, "a1B2" * 5, "sk-", "ghp_", "eyJ", "AKIA", "Q~", "12345678:AA",
    "[REDACTED]", "***", "é", "İ", "\u212a", "ſ", "ß", "Σ", "\udc80", "\x00", "\u2028",
]
# The smallest text each rule (or limit) changes, with nothing else that would fail `_quiet`.
MINIMAL_SECRETS = [
    "-u bob:hunter2", "curl --user=bob:hunter2", "Bearer abc123def456", "BASIC dXNlcjpodW50ZXIy",
    "db://bob:hunter2@h", "password=hunter2", "Token: abc", "<secret>x</secret>",
    "--passphrase hunter2", "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----",
    "ghp_" + "a1B2c3D4e5" * 4, "x\udc80y", "EMP-123456", "ssn: abc", "cardNumber=4111",
    "w" * 70,
]
pieces = st.sampled_from(WORDS + EDGES)
texts = st.one_of(
    st.text(max_size=30),
    st.lists(pieces, max_size=25).map("".join),
    st.lists(pieces, max_size=40).map(" ".join),
    st.sampled_from([v for _, v, _, _ in SECRET_CASES if isinstance(v, str)]),
    st.sampled_from([v for _, v in BENIGN_CASES if isinstance(v, str)]),
    st.sampled_from([k for _, k in PROVIDER_KEYS]),
    st.tuples(pieces, st.sampled_from(MINIMAL_SECRETS), pieces).map(" ".join),
)
SENSITIVE = [
    "password", "Password", "DB_PASSWORD", "dbPassword", "api_key", "apiKey", "X-API-KEY",
    "access_token", "Authorization", "set-cookie", "PWD", "pwd", "db_pass", "PGPASSWORD",
    "secret_id", "sessionid", "SSN", "card_number", "cardNumber", "1234", "x-1234",
    "token", "max_tokens", "token_count", "eos_token", "OAuth", "o_auth", "first_pass",
]
keys = st.one_of(texts, st.sampled_from(SENSITIVE))
odd_keys = st.sampled_from([1, 2.5, None, True, ("t", 1), b"api_key", Sub("password"), Sub("k")])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e300]),
    texts,
    st.binary(max_size=12),
    st.sampled_from([
        Color.RED, Color.TOKEN, Level.HIGH, Mode.FAST, uuid.UUID(UUID), Sub("plain"),
        orjson.Fragment(b'{"password": "x"}'), datetime.date(2026, 1, 2), {"set"},
        bytearray(b"ab"),
    ]),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.tuples(st.sampled_from(SENSITIVE), children),  # [name, value] header pairs
        st.lists(st.tuples(st.sampled_from(SENSITIVE + WORDS), texts), max_size=3),
        st.dictionaries(keys, children, max_size=6),
        st.dictionaries(st.one_of(keys, odd_keys), children, max_size=3),
    )


json_like = st.recursive(scalars, containers, max_leaves=25)
clean_words = st.sampled_from(["plan", "split", "upload", "review", "draft", "für", "数据"])
clean_like = st.recursive(  # mostly what takes the fast paths, with a few edge values
    st.one_of(
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.none(),
        st.sampled_from([math.inf, -math.nan, 2**64, Level.HIGH, Sub("x")]),
        st.lists(clean_words, max_size=30).map(" ".join),
    ),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(clean_words, c, max_size=4)),
    max_leaves=12,
)


def nested(depth: int, width: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] * width if level % 2 else {f"k{i}": value for i in range(width)}
    return value


# --- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(texts)
def test_quiet_text_is_what_the_full_rules_leave_alone(text: str):
    for fast, ref in PAIRS:
        if fast._quiet(text):
            assert ref._text(text) == text
        assert outcome(fast.redact_text, text) == outcome(ref.redact_text, text)
        assert outcome(Payloads(fast).text, text) == outcome(ref.redact, text)


@PROPERTY
@given(texts)
def test_no_text_makes_a_rule_raise(text: str):
    """`redact` turns an internal error into the marker for the whole value: safe, but the
    payload is lost. So the text path itself, without that net, must never raise."""
    for fast, ref in PAIRS:
        fast._text(text)
        ref._text(text)


@PROPERTY
@given(st.data(), st.one_of(json_like, clean_like))
def test_fast_paths_match_the_full_walk(data: st.DataObject, value: Any):
    fast, ref = data.draw(st.sampled_from(PAIRS))
    assert outcome(fast.redact, value) == outcome(ref.redact, value)
    assert outcome(Payloads(fast).json, value) == outcome(reference_json, ref, value)
    assert outcome(Payloads(fast).json_object, value) == outcome(Payloads(ref).json_object, value)
    assert outcome(Payloads(fast).text, value) == outcome(Payloads(ref).text, value)


@PROPERTY
@given(st.data(), clean_like, st.sampled_from([*WORDS, *EDGES, *SENSITIVE, *MINIMAL_SECRETS]))
def test_one_planted_piece_is_judged_like_the_full_walk(data, value: Any, piece: str):
    fast, ref = data.draw(st.sampled_from(PAIRS))
    planted = data.draw(st.sampled_from([
        {piece: "x1"}, {"note": f"plan {piece} x1"}, [[piece, "x1"]], (piece, value), [piece],
    ]))
    whole = {"a": value, "b": planted}
    assert fast.redact(whole) == ref.redact(whole)
    assert Payloads(fast).json(whole) == reference_json(ref, whole)


@PROPERTY
@given(scalars)
def test_leaves_inlined_in_the_walk_match_walk_itself(value: Any):
    for fast, _ in PAIRS:
        alone = fast.redact(value)
        assert fast.redact({"note": value}) == {"note": alone}
        assert fast.redact([value]) == [alone]
        assert fast.redact((1, value)) == [1, alone]  # not a [name, value] pair: 1 is no name


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True, [1] != (1,))."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same, a, b))
    return a == b or (a != a and b != b)


@PROPERTY
@given(st.dictionaries(st.one_of(keys, odd_keys), json_like, max_size=6))
def test_a_redacted_mapping_is_what_its_json_text_reads_back_as(value: Any):
    """create_task returns `Payloads.object`'s mapping instead of parsing the JSON it stored."""
    for fast, _ in PAIRS:
        redacted, text = Payloads(fast).object(value)
        assert same(jsonutil.loads(text), redacted)


@pytest.mark.parametrize(("fast", "ref"), PAIRS, ids=[repr(cfg) for cfg in CONFIGS])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("width", [1, 2, 3, 5, 6])
def test_limits_match_at_every_edge(fast: Redactor, ref: Reference, depth: int, width: int):
    value = nested(depth, width)
    assert Payloads(fast).json(value) == reference_json(ref, value)
    text = "word " * (fast.max_string // 5 + width - 3)  # around max_string
    assert fast.redact(text) == ref.redact(text)
    assert Payloads(fast).json([text]) == reference_json(ref, [text])


@pytest.mark.parametrize("text", MINIMAL_SECRETS)
def test_each_rule_fails_quiet(text: str):
    changing = [fast for fast, ref in PAIRS if ref._text(text) != text]
    assert changing
    for fast in changing:
        assert not fast._quiet(text)
        assert not fast._quiet(f"plan {text} split")


def test_clean_text_skips_the_rule_chain():
    r = Redactor()

    def no_rules(text: str) -> str:
        raise AssertionError("the rule chain ran")

    r._scan = no_rules  # type: ignore[method-assign]
    prose = (
        "Collect the requirements, draft the schema migration and review it with the owner; "
        "für Straße — 计划 ✓. Step 3: upload the chart (the 2nd one) > the old one."
    )
    for text in (prose, "Step 3: draft the tests", "x = 1 + 2", "short"):
        assert r.redact_text(text) == text
        assert r.redact({"note": text, "list": [text]}) == {"note": text, "list": [text]}
