"""Redaction: secrets leave every payload and log record; everything else stays as it was.

Sections: case tables (secrets gone, context kept; benign payloads unchanged), key names,
value types and output shape, limits, idempotency, the logging filter, adversarial inputs,
and hypothesis properties over random JSON-like values with planted secrets.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import string
from collections import deque
from enum import IntEnum
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redaction_cases import (
    BENIGN_CASES,
    GITHUB,
    JWT,
    OPENAI,
    PEM_RSA,
    PROVIDER_KEYS,
    SECRET_CASES,
    SHA1,
    UUID,
)

from plandb import redaction_rules
from plandb.redaction import (
    BINARY_TEMPLATE,
    CIRCULAR_MARKER,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STRING,
    DEFAULT_REDACTOR,
    DEPTH_MARKER,
    MORE_ITEMS_KEY,
    REDACTED,
    RedactingFilter,
    Redactor,
    redact,
)
from plandb.redaction_rules import key_words

# Redaction never opens a database: skip conftest's per-test gc.collect() connection-leak
# check, which would cost ~0.2 s for each of the hundreds of table rows below.
pytestmark = pytest.mark.allow_open_connections

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def strings_in(value: Any) -> list[str]:
    """Every str key and str value in a redacted value, depth first."""
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            out.append(item)
    return out


# --- case tables ------------------------------------------------------------------------------


def test_case_tables_are_big_enough():
    assert len(SECRET_CASES) >= 100
    assert len(BENIGN_CASES) >= 50
    assert len({case[0] for case in SECRET_CASES}) == len(SECRET_CASES)


@pytest.mark.parametrize(
    ("value", "gone", "kept"),
    [pytest.param(v, g, k, id=cid) for cid, v, g, k in SECRET_CASES],
)
def test_secret_is_gone_and_context_remains(
    value: Any, gone: tuple[str, ...], kept: tuple[str, ...]
):
    out = redact(value)
    text = "\n".join(strings_in(out))
    dumped = orjson.dumps(out).decode()
    for secret in gone:
        assert secret not in text
        assert secret not in dumped
    for context in kept:
        assert context in text
    assert REDACTED in text
    assert redact(out) == out  # idempotent


@pytest.mark.parametrize("value", [pytest.param(v, id=cid) for cid, v in BENIGN_CASES])
def test_benign_payload_comes_back_unchanged(value: Any):
    assert redact(value) == value


def test_provider_key_alone_is_replaced_whole():
    assert [name for name, key in PROVIDER_KEYS if redact(key) != REDACTED] == []


def test_curl_example_from_the_docs():
    text = 'curl -H "Authorization: Bearer abc.def.123" https://api.example.com'
    assert redact(text) == 'curl -H "Authorization: Bearer [REDACTED]" https://api.example.com'


def test_url_credentials_keep_scheme_user_and_host():
    assert redact("postgres://bob:hunter2@db:5432/x") == "postgres://bob:[REDACTED]@db:5432/x"


def test_pem_block_keeps_its_frame():
    out = redact(f"a\n{PEM_RSA}\nb")
    assert out == (
        "a\n-----BEGIN RSA PRIVATE KEY-----\n[REDACTED]\n-----END RSA PRIVATE KEY-----\nb"
    )


# --- key names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("OPENAI_API_KEY", ("openai", "api", "key")),
        ("x-api-key", ("x", "api", "key")),
        ("apiKey", ("api", "key")),
        ("APIKey", ("api", "key")),
        ("PGPASSWORD", ("pg", "password")),
        ("accessToken", ("access", "token")),
        ("OAuthToken", ("oauth", "token")),
        ("monkey", ("monkey",)),
        ("tokenizer", ("tokenizer",)),
        ("db.password2", ("db", "password", "2")),
    ],
)
def test_key_words_split_every_spelling(key: str, words: tuple[str, ...]):
    assert key_words(key) == words


SENSITIVE_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "db_password",
    "dbPassword",
    "db-password",
    "passwd",
    "api_key",
    "apiKey",
    "x-api-key",
    "X_API_KEY",
    "OPENAI_API_KEY",
    "access_token",
    "refresh_token",
    "auth_token",
    "token",
    "client_secret",
    "secret",
    "credentials",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "private_key",
    "aws_secret_access_key",
    "sessionid",
    "mysql_pwd",
    "PWD",
    "db_pass",
    "session_token",
]
LOOK_ALIKE_KEYS = [
    "max_tokens",
    "prompt_tokens",
    "completion_tokens",
    "token_count",
    "num_tokens",
    "tokenizer",
    "tokens_used",
    "tokens",
    "key",
    "primary_key",
    "keyword",
    "keywords",
    "key_id",
    "signature",
    "author",
    "password_policy",
    "password_min_length",
    "token_type",
    "secret_name",
    "api_key_id",
    "private_key_path",
    "eos_token",
    "next_page_token",
    "session",
    "session_id",
    "passwordless",
    "first_pass",
    "monkey",
    "OAuth",
    "auth_method",
    "credentials_file",
    "password_file",
]


def test_sensitive_keys():
    assert [k for k in SENSITIVE_KEYS if not DEFAULT_REDACTOR.is_sensitive_key(k)] == []


def test_look_alike_keys_are_not_sensitive():
    assert [k for k in LOOK_ALIKE_KEYS if DEFAULT_REDACTOR.is_sensitive_key(k)] == []


def test_non_string_key_is_checked_by_its_text():
    assert not DEFAULT_REDACTOR.is_sensitive_key(42)
    assert DEFAULT_REDACTOR.is_sensitive_key(b"api_key")


@pytest.mark.parametrize(
    "value", [{"a": 1}, [1, 2], 12345, 1.5, "text", b"bytes", ("t", "u"), {"x"}]
)
def test_value_under_sensitive_key_is_replaced_whatever_its_type(value: Any):
    assert redact({"client_secret": value}) == {"client_secret": REDACTED}


@pytest.mark.parametrize("value", [None, True, False])
def test_none_and_booleans_under_sensitive_keys_are_kept(value: Any):
    assert redact({"password": value}) == {"password": value}


def test_numbers_under_token_keys_are_counts_but_text_is_a_secret():
    out = redact(
        {
            "token": 4000,
            "access_token": "opaque-1",
            "max_token": 64,
            "auth_token": 1.5,
            "id_token": 10**30,
            "refresh_token": math.inf,
        }
    )
    assert out == {
        "token": 4000,
        "access_token": REDACTED,
        "max_token": 64,
        "auth_token": 1.5,
        "id_token": REDACTED,  # would come out as text: masked, so a second pass agrees
        "refresh_token": REDACTED,
    }
    assert redact("token: 4000, token: abc12") == f"token: 4000, token: {REDACTED}"


def test_bare_pwd_keeps_paths_only():
    assert redact({"PWD": "/home/ada", "pwd": "hunter2"}) == {"PWD": "/home/ada", "pwd": REDACTED}
    assert redact("PWD=/srv/app PWD=hunter2;") == f"PWD=/srv/app PWD={REDACTED};"


@pytest.mark.parametrize(
    "text", ["password=\n", "PWD=\u2028", "token=,x", "secret: ;", "api_key=)", "x password=\n y"])
def test_a_key_with_no_value_is_left_alone_and_the_payload_kept(text: str):
    # Once an internal error on these replaced the whole payload with the marker.
    assert redact(text) == text
    assert redact({"note": text, "n": 1}) == {"note": text, "n": 1}


def test_extra_keys_and_patterns():
    r = Redactor(
        extra_keys=["ssn", "cardNumber"], extra_patterns=[r"EMP-\d{6}", r"pin=(?P<secret>\d{4})"]
    )
    out = r.redact({"SSN": "123-45-6789", "card_number": "4111", "note": "EMP-123456 pin=1234 ok"})
    assert out == {
        "SSN": REDACTED,
        "card_number": REDACTED,
        "note": f"{REDACTED} pin={REDACTED} ok",
    }
    assert r.redact_text("my cardNumber: 4111111111111111") == f"my cardNumber: {REDACTED}"
    assert redact({"ssn": "123-45-6789"}) == {"ssn": "123-45-6789"}  # default instance unaffected


# --- value types and output shape -------------------------------------------------------------


class Color(IntEnum):
    RED = 1


class Boom:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class BadReprType:
    def __repr__(self):  # type: ignore[override]
        return 42


class Weird(str):
    def __str__(self) -> str:
        raise RuntimeError("never called")


def test_types_become_json_types():
    value = {
        7: "int key",
        None: "none key",
        True: "bool key",
        2.5: "float key",
        ("t", 1): "tuple key",
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "big": 2**70,
        "neg": -(2**64),
        "tuple": (1, 2),
        "set": {3},
        "frozen": frozenset({4}),
        "deque": deque([5]),
        "bytes": b"hello",
        "binary": b"\xff\xfe\x00",
        "bytearray": bytearray(b"ab"),
        "memoryview": memoryview(b"mv"),
        "enum": Color.RED,
        "str_sub": Weird("plain"),
        "obj": Boom(),
        "bad_repr": BadReprType(),
        "surrogate": "x\udc80y",
    }
    out = redact(value)
    assert out == {
        "7": "int key",
        "null": "none key",
        "true": "bool key",
        "2.5": "float key",
        "('t', 1)": "tuple key",
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
        "big": str(2**70),
        "neg": str(-(2**64)),
        "tuple": [1, 2],
        "set": [3],
        "frozen": [4],
        "deque": [5],
        "bytes": "hello",
        "binary": BINARY_TEMPLATE.format(n=3),
        "bytearray": "ab",
        "memoryview": "mv",
        "enum": 1,
        "str_sub": "plain",
        "obj": "[unrepresentable Boom]",
        "bad_repr": "[unrepresentable BadReprType]",
        "surrogate": "x\\udc80y",
    }
    assert type(out["str_sub"]) is str and type(out["enum"]) is int
    orjson.dumps(out)
    assert redact(out) == out


def test_huge_int_beyond_str_limit_does_not_raise():
    out = redact({"n": 10**5000})
    assert out["n"].startswith("[int: ") or out["n"].isdigit()
    orjson.dumps(out)


def test_self_referencing_containers():
    a: list[Any] = [1]
    a.append(a)
    d: dict[str, Any] = {"name": "x"}
    d["self"] = d
    d["list"] = a
    out = redact(d)
    assert out == {"name": "x", "self": CIRCULAR_MARKER, "list": [1, CIRCULAR_MARKER]}
    shared = [1, 2]
    assert redact({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}  # not circular


def test_input_is_not_mutated():
    value = {"password": "pw", "list": [("x", "Bearer abc123456"), {"token": "t"}], 3: {1, 2}}
    before = copy.deepcopy(value)
    redact(value)
    assert value == before


def test_hostile_container_degrades_to_marker():
    class Liar(dict):
        def __len__(self) -> int:
            raise RuntimeError("no")

    assert redact({"a": Liar(x=1)}) == REDACTED


@pytest.mark.parametrize(
    ("marker", "ok"),
    [("[REDACTED]", True), ("***", True), ("<redacted>", False), ("two words", False), ("", False)],
)
def test_marker_validation(marker: str, ok: bool):
    if ok:
        assert Redactor(marker=marker).redact({"password": "x"}) == {"password": marker}
    else:
        with pytest.raises(ValueError):
            Redactor(marker=marker)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_string": 10},
        {"max_items": 0},
        {"max_depth": 0},
        {"max_depth": 1000},
        {"extra_patterns": [r"\[REDACTED\]"]},
        {"extra_patterns": [r"x*"]},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]):
    with pytest.raises(ValueError):
        Redactor(**kwargs)


def test_defaults():
    assert (DEFAULT_MAX_STRING, DEFAULT_MAX_ITEMS, DEFAULT_MAX_DEPTH) == (65536, 1000, 32)
    assert DEFAULT_REDACTOR.marker == REDACTED == "[REDACTED]"


# --- limits ---------------------------------------------------------------------------------------


def test_long_string_is_cut_with_marker_and_fits():
    text = "word " * 20000
    out = redact(text)
    assert len(out) <= DEFAULT_MAX_STRING
    body, _, tail = out.rpartition(" …[truncated ")
    assert tail.endswith(" chars]")
    assert text.startswith(body) and len(body) + int(tail.split()[0]) == len(text)
    assert not body.endswith(" ")  # cut at a word boundary


def test_secret_straddling_the_cut_is_masked_not_halved():
    r = Redactor(max_string=100)
    text = "x" * 80 + " " + GITHUB + " tail"
    out = r.redact(text)
    assert len(out) <= 100
    assert not any(GITHUB[i : i + 8] in out for i in range(len(GITHUB) - 8))


def test_cut_never_leaves_a_dangling_key():
    r = Redactor(max_string=64)
    for pad in range(40, 64):
        text = "y" * pad + " password=" + "s3cr3t" * 10
        out = r.redact(text)
        assert "s3cr3t" not in out
        assert r.redact(out) == out


def test_list_and_dict_are_cut_with_marker():
    r = Redactor(max_items=5)
    assert r.redact(list(range(12))) == [0, 1, 2, 3, "[… 8 more items]"]
    out = r.redact({f"k{i}": i for i in range(7)})
    assert list(out) == ["k0", "k1", "k2", "k3", MORE_ITEMS_KEY]
    assert out[MORE_ITEMS_KEY] == "[… 3 more items]"
    assert r.redact(list(range(5))) == list(range(5))  # exactly at the limit: untouched


def test_depth_is_capped_with_marker():
    r = Redactor(max_depth=3)
    deep: Any = "leaf"
    for _ in range(6):
        deep = [deep]
    assert r.redact(deep) == [[[DEPTH_MARKER]]]
    assert r.redact([[["leaf"]]]) == [[["leaf"]]]


def test_default_depth_survives_very_deep_input():
    deep: Any = {}
    for _ in range(5000):
        deep = {"d": deep}
    out = redact(deep)
    orjson.dumps(out)
    assert DEPTH_MARKER in orjson.dumps(out).decode()


@pytest.mark.parametrize("size", [63, 64, 65, 100, 200])
def test_truncation_is_idempotent_for_every_cut_point(size: int):
    r = Redactor(max_string=64)
    fragments = ["password=", "[REDACTED]", " ", "Bearer ", "abc123", "://u:", "@h", "token: "]
    for start in range(len(fragments)):
        text = "".join(fragments[(start + i) % len(fragments)] for i in range(size // 4))
        out = r.redact(text)
        assert len(out) <= 64
        assert r.redact(out) == out


# --- logging -------------------------------------------------------------------------------------


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s extra=%(detail)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("plandb.test_redaction")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_filter_redacts_message_args_and_extra(log_stream):
    logger, stream = log_stream
    logger.info(
        "calling %s with %s",
        "https://api.example.com",
        {"Authorization": f"Bearer {OPENAI}"},
        extra={"detail": f"git clone https://u:{GITHUB}@github.com/x", "api_key": "opaque-e-1"},
    )
    line = stream.getvalue()
    assert OPENAI not in line and GITHUB not in line
    assert line.startswith("INFO calling https://api.example.com with {'Authorization': ")
    assert "extra=git clone https://u:[REDACTED]@github.com/x" in line


def test_filter_keeps_record_fields_and_never_drops(log_stream):
    logger, stream = log_stream
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "password=%s", ("hunter2",), None)
    record.api_key = "opaque-e-2"
    record.count = 3
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"password={REDACTED}"
    assert record.api_key == REDACTED and record.count == 3
    logger.debug("plain %d tasks", 3, extra={"detail": "ok"})
    assert stream.getvalue() == "DEBUG plain 3 tasks extra=ok\n"


def test_filter_redacts_tracebacks(log_stream):
    logger, stream = log_stream
    try:
        raise ConnectionError("connect to postgres://app:tb-secret-1@db failed")
    except ConnectionError:
        logger.exception("database down", extra={"detail": "-"})
    out = stream.getvalue()
    assert "tb-secret-1" not in out
    assert "ConnectionError: connect to postgres://app:[REDACTED]@db failed" in out
    assert "Traceback (most recent call last)" in out


def test_filter_handles_dict_messages_and_broken_format_args(log_stream):
    logger, stream = log_stream
    logger.info({"event": "x", "token": "opaque-d-1"}, extra={"detail": "-"})
    assert "opaque-d-1" not in stream.getvalue()
    assert "'event': 'x'" in stream.getvalue()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s password=%s", ("pw1",), None)
    assert RedactingFilter().filter(record) is True
    assert record.args == (REDACTED,) and record.msg.startswith("%s %s password=")


def test_filter_with_a_custom_marker():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(Redactor(marker="***")))
    logger = logging.getLogger("plandb.test_redaction.custom")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("DB_PASSWORD=%s", "hunter2")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "DB_PASSWORD=***\n"


# --- adversarial inputs: every rule on 200,000 characters (correctness only) ------------------

N = 200_000
ADVERSARIAL = {
    "letters": "a" * N,
    "openai-prefix": "sk-" * (N // 3),
    "url-colons": "://" + ":" * N,
    "url-repeat": "a://" * (N // 4),
    "url-no-at": "://user:" + "p" * N,
    "url-many-at": "://u:" + "@" * N,
    "jwt-prefix": "eyJ" * (N // 3),
    "jwt-no-dot": "eyJ" + "a" * N,
    "jwt-dots": "eyJaaaaaaaa." * (N // 12),
    "equals": "=" * N,
    "colons": ":" * N,
    "pem-begins": "-----BEGIN PRIVATE KEY-----" * (N // 27),
    "pem-open": "-----BEGIN PRIVATE KEY-----\n" + "A" * N,
    "pem-partial": "-----BEGIN " * (N // 11),
    "bearer-repeat": "Bearer " * (N // 7),
    "bearer-long": "Bearer " + "a1" * (N // 2),
    "basic-long": "Basic " + "QUFB" * (N // 4),
    "key-stems": "key" * (N // 3),
    "assignments": "password=" * (N // 9),
    "quote-open": 'password: "' + "\\" * N,
    "flags": "--password " * (N // 11),
    "xml-open": "<password>" * (N // 10),
    "spaced-keys": "API Key: " * (N // 9),
    "aws-prefix": "AKIA" * (N // 4),
    "github-prefix": "ghp_" * (N // 4),
    "azure": "Q~" * (N // 2),
    "telegram": "12345678:AA" * (N // 11),
    "digits": "1" * N,
    "spaces": " " * N,
    "dashes": "-" * N,
    "cookie": "Cookie: " + "a=b; " * (N // 5),
    # Shapes that once made a search quadratic: a match attempt that consumes a long run and
    # then fails, retried from every position inside the run.
    "jwt-dash-runs": ("-eyJ" + "a" * 16) * (N // 20),
    "sendgrid-dash-runs": ("-SG." + "a" * 16) * (N // 20),
    "openai-lowercase": "sk-" + "a" * N,
    "openai-mixed": "sk-A" * (N // 4),
    "huggingface-prefix": "hf_" * (N // 3),
    "url-at-password": "://u:" + "p@" * (N // 2),
    "key-colons": "key:" * (N // 4),
    "token-counts": "token: 1 " * (N // 9),
    "pem-escaped-newlines": "-----BEGIN PRIVATE KEY-----" + "\\n" * (N // 2),
    "user-flag-colons": "curl -u a:" + ":" * N,
    "user-flag-repeat": "-u a:b " * (N // 7),
    "discord-prefix": ("https://discord.com/api/webhooks/" + "1" * 10) * (N // 43),
}


@pytest.mark.parametrize("text", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_adversarial_input_is_handled(text: str):
    r = Redactor(max_string=N * 2)  # no cut: every rule sees all of it
    out = r.redact_text(text)
    assert isinstance(out, str)
    assert r.redact_text(out) == out
    short = DEFAULT_REDACTOR.redact_text(text)
    assert len(short) <= DEFAULT_MAX_STRING


def test_adversarial_secrets_are_still_found():
    text = ("sk-" * 1000) + " " + OPENAI + " " + ("eyJ" * 1000) + " " + JWT
    out = Redactor(max_string=N).redact_text(text)
    assert OPENAI not in out and JWT not in out


# --- properties -----------------------------------------------------------------------------------

FRAGMENTS = [
    "password",
    "=",
    ":",
    " ",
    '"',
    "'",
    "\n",
    "Bearer ",
    "Basic ",
    "://",
    "@",
    "sk-",
    "ghp_",
    "eyJ",
    ".",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "token",
    "api_key",
    "--password ",
    "<password>",
    "</password>",
    "AKIA",
    "Q~",
    "123456789:AA",
    REDACTED,
    " …[truncated 5 chars]",
    "Cookie: ",
    "xoxb-",
    "A" * 20,
    "1234567890",
    '\\"',
    "PWD=",
    "/home",
    "abcdefghij",
    "-u ",
    "--user=",
    "x-access-token",
    "_",
    "-",
    ";",
    "&",
    "Authorization: ",
    "dXNlcjpwYXNz",
    "[… 2 more items]",
]
texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=30).map("".join),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    texts,
    st.binary(max_size=20),
)
keys = st.one_of(texts, st.sampled_from(["password", "token", "max_tokens", "key", "PWD", "note"]))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=30,
)
small = Redactor(max_string=64, max_items=3, max_depth=3)


@PROPERTY
@given(json_like)
def test_output_is_always_orjson_serialisable(value: Any):
    orjson.dumps(redact(value))
    orjson.dumps(small.redact(value))


@PROPERTY
@given(json_like)
def test_redact_is_idempotent(value: Any):
    once = redact(value)
    assert redact(once) == once


@PROPERTY
@given(json_like)
def test_redact_is_idempotent_at_small_limits(value: Any):
    once = small.redact(value)
    assert small.redact(once) == once


@PROPERTY
@given(json_like)
def test_input_is_never_mutated(value: Any):
    before = repr(value)
    redact(value)
    small.redact(value)
    assert repr(value) == before


ALNUM = string.ascii_letters + string.digits


def random_run(alphabet: str, size: int) -> st.SearchStrategy[str]:
    # At least one digit: real generated keys have them, and the rules for `sk-`/`hf_` ask for it.
    return st.text(alphabet, min_size=size - 1, max_size=size - 1).map(lambda s: s + "7")


SECRET_SHAPES: list[st.SearchStrategy[tuple[str, str]]] = [
    random_run(ALNUM, 48).map(lambda s: (f"sk-proj-{s}", s)),
    random_run(ALNUM + "-_", 90).map(lambda s: (f"sk-ant-api03-{s}", s)),
    random_run(string.ascii_uppercase + string.digits, 16).map(lambda s: ("AKIA" + s, "AKIA" + s)),
    random_run(ALNUM, 36).map(lambda s: (f"ghp_{s}", s)),
    random_run(ALNUM, 20).map(lambda s: (f"glpat-{s}", s)),
    random_run(ALNUM, 40).map(lambda s: (f"xoxb-123456789012-{s}", s)),
    random_run(ALNUM, 24).map(lambda s: (f"sk_live_{s}", s)),
    random_run(ALNUM + "-_", 35).map(lambda s: (f"AIza{s}", s)),
    random_run(ALNUM, 34).map(lambda s: (f"hf_{s}", s)),
    random_run(ALNUM, 36).map(lambda s: (f"npm_{s}", s)),
    random_run("0123456789abcdef", 32).map(lambda s: (f"SK{s}", s)),
    random_run(ALNUM, 30).map(lambda s: (f"eyJhbGciOiJIUzI1NiJ9.eyJ{s}.{s[::-1]}", s)),
    random_run(ALNUM, 20).map(lambda s: (f"Bearer {s}", s)),
    random_run(ALNUM, 16).map(lambda s: (f"postgres://app:{s}@db:5432/x", s)),
    random_run(ALNUM, 16).map(lambda s: (f"export DB_PASSWORD={s}", s)),
    random_run(ALNUM, 16).map(lambda s: (f'{{"client_secret": "{s}"}}', s)),
    random_run(ALNUM, 16).map(
        lambda s: (f"-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----", s)
    ),
]
BENIGN_KEYS = st.sampled_from(["note", "content", "output", "args", "message", "detail", "x"])


def plant(data: st.DataObject, tree: Any, secret: Any) -> Any:
    """Put `secret` somewhere in `tree`: under a benign key, as a list item, or at the root."""
    if isinstance(tree, dict) and tree and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(tree, key=repr)))
        return {**tree, key: plant(data, tree[key], secret)}
    if isinstance(tree, list) and tree and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(tree) - 1))
        return [*tree[:i], plant(data, tree[i], secret), *tree[i + 1 :]]
    if isinstance(tree, list):
        return [*tree, secret]
    return {data.draw(BENIGN_KEYS): secret, "rest": tree}


@PROPERTY
@given(st.data(), json_like, st.one_of(SECRET_SHAPES), st.text(max_size=30), st.text(max_size=30))
def test_planted_secret_never_survives(data, tree, shape, before, after):
    text, secret = shape
    where = data.draw(st.sampled_from(["alone", "in-text"]))
    planted = text if where == "alone" else f"{before} {text} {after}"
    value = plant(data, tree, planted)
    for redactor in (DEFAULT_REDACTOR, small):
        dumped = orjson.dumps(redactor.redact(value)).decode()
        assert secret not in dumped


@PROPERTY
@given(st.integers(65, 400), st.integers(4, 30), st.integers(4, 12))
def test_limits_always_leave_markers(length: int, items: int, depth: int):
    r = Redactor(max_string=64, max_items=3, max_depth=3)
    out_text = r.redact("z" * length)
    assert len(out_text) <= 64 and "…[truncated " in out_text
    out_list = r.redact(list(range(items)))
    assert len(out_list) == 3 and out_list[-1] == f"[… {items - 2} more items]"
    nested: Any = 0
    for _ in range(depth):
        nested = [nested]
    assert DEPTH_MARKER in orjson.dumps(r.redact(nested)).decode()


def test_rules_table_patterns_are_all_prefix_anchored():
    """Every provider shape starts with a literal and is long enough for the run prefilter."""
    for prefix, rest, _ in redaction_rules.PROVIDER_PATTERNS:
        assert prefix and prefix[0] not in "([\\.^$*+?{|"
        assert rest
    assert redaction_rules.MIN_TOKEN_LENGTH <= min(len(k) for _, k in PROVIDER_KEYS)


def test_common_identifiers_survive_inside_text():
    text = f"commit {SHA1} for plan {UUID} at /srv/plans/plan_7.sqlite"
    assert redact(text) == text
