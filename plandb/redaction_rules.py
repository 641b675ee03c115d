"""The rules behind :mod:`plandb.redaction`: which key names hold secrets, which value shapes
are secrets, as tables and the compiled matchers built from them.

Kept apart from the engine (walking values, applying limits, logging) so that adding a
provider prefix or a key word is a one-line change that can be reviewed on its own. Sources:
Sentry's scrubber denylist and Relay's key regex for key names; gitleaks' default rules and
detect-secrets' plugins for value shapes. Nothing here imports plandb.
"""

from __future__ import annotations

import base64
import binascii
import re

# --- Key names --------------------------------------------------------------------------------
# A key is split into lower-case words (camelCase, snake_case, kebab-case, dots, spaces, digits)
# and matched against these word sequences, never against substrings: `max_tokens` must not
# match `token`, `author` must not match `auth`.

SECRET_PHRASES: frozenset[tuple[str, ...]] = frozenset(
    {
        ("password",), ("passwords",), ("passwd",), ("pwd",), ("passphrase",), ("passcode",),
        ("secret",), ("secrets",), ("credential",), ("credentials",), ("creds",),
        ("cookie",), ("cookies",), ("authorization",), ("auth",), ("token",), ("mnemonic",),
        # Web-framework session cookie names. A bare `session` or `session_id` is *not* here:
        # in plandb a session is a planner session and its id is a routing key we need in logs.
        ("sessionid",), ("phpsessid",), ("jsessionid",), ("session", "key"),
        ("session", "secret"),
        ("api", "key"), ("api", "keys"), ("access", "key"), ("access", "keys"),
        ("private", "key"), ("private", "keys"), ("secret", "key"), ("signing", "key"),
        ("encryption", "key"), ("master", "key"), ("auth", "key"), ("client", "key"),
        ("subscription", "key"), ("app", "key"), ("account", "key"), ("shared", "key"),
        ("secret", "id"),  # Vault AppRole: the second half of a login, not an identifier
        ("access", "tokens"), ("refresh", "tokens"), ("auth", "tokens"), ("api", "tokens"),
        ("seed", "phrase"), ("recovery", "phrase"),
    }
)

# Plural "tokens" alone is a count in LLM logs (`max_tokens`, `prompt_tokens`); "token" alone is
# a credential. Under token-ish keys numbers are kept, whatever the other words say.
TOKEN_WORDS: frozenset[str] = frozenset({"token", "tokens"})

# A `token` preceded by one of these is a tokenizer symbol or a pagination cursor, not a
# credential: `eos_token: "</s>"`, `next_page_token`, `cancellation_token`.
NON_SECRET_TOKEN_QUALIFIERS: frozenset[str] = frozenset(
    {
        "eos", "bos", "pad", "unk", "sep", "cls", "mask", "stop", "start", "end", "special",
        "first", "last", "next", "prev", "previous", "output", "input", "image", "audio",
        "vocab", "sentinel", "separator", "page", "continuation", "pagination", "cursor",
        "sync", "resume", "cancellation", "idempotency",
    }
)

# When a key *ends* with one of these after the secret words, it describes the secret instead
# of holding it: `password_min_length`, `token_count`, `secret_name`, `api_key_id`,
# `private_key_path`, `token_type`, `auth_method`.
DESCRIPTOR_WORDS: frozenset[str] = frozenset(
    {
        "count", "counts", "num", "number", "total", "limit", "limits", "max", "maximum", "min",
        "minimum", "length", "len", "size", "budget", "usage", "used", "remaining", "left",
        "policy", "policies", "rule", "rules", "strength", "complexity", "expiry", "expires",
        "expiration", "expired", "exp", "ttl", "age", "lifetime", "type", "types", "kind",
        "name", "names", "id", "ids", "label", "field", "fields", "url", "uri", "endpoint",
        "path", "file", "filename", "dir", "location", "env", "var", "variable", "param",
        "required", "enabled", "disabled", "present", "provided", "set", "changed", "updated",
        "created", "at", "time", "timestamp", "date", "version", "format", "algorithm", "alg",
        "method", "scheme", "mode", "provider", "source", "issuer", "audience", "scope",
        "scopes", "status", "error", "errors", "valid", "verified", "index", "position",
        "offset", "estimate", "estimated", "ratio", "rate", "cost", "price", "per", "user",
        "username", "email", "login", "domain", "prefix", "suffix", "masked", "redacted",
        # file extensions: `credentials.json`, `private_key.pem` name files, not secrets
        "json", "yaml", "yml", "toml", "ini", "cfg", "conf", "txt", "xml", "pem", "crt",
    }
)

# `first_pass`, `second_pass`: a `pass` after these is a step, not a password (`db_pass` is).
NON_SECRET_PASS_QUALIFIERS: frozenset[str] = frozenset(
    {
        "first", "second", "third", "last", "next", "final", "single", "multi", "one", "two",
        "each", "per", "compile", "forward", "backward", "by", "over", "test", "lint",
    }
)

# Words glued together without separators (`apikey`, `PGPASSWORD`, `accessToken` in all
# caps) are split at these endings. `key` only splits after a known qualifier, so `monkey`
# and `hotkey` stay whole.
COMPOUND_SUFFIXES: tuple[str, ...] = (
    "credentials", "credential", "passwords", "passphrase", "password", "passcode", "passwd",
    "secrets", "secret", "cookies", "cookie", "token",
)
KEY_QUALIFIERS: frozenset[str] = frozenset(
    {
        "api", "private", "secret", "access", "signing", "encryption", "master", "auth",
        "client", "subscription", "session", "app", "account", "shared",
    }
)
# Words the camelCase splitter tears apart that must stay one word: `OAuth` is not `auth`.
WORD_MERGES: dict[tuple[str, str], str] = {("o", "auth"): "oauth"}

# Literal fragments one of which every sensitive key written in text contains; strings with
# none of them skip the key/value pass. Case variants are generated from these.
TEXT_STEMS: tuple[str, ...] = (
    "pass", "pwd", "secret", "token", "key", "auth", "cred", "cookie", "sess", "mnemonic",
    "phrase",
)

# --- Values inside text ----------------------------------------------------------------------

# `Authorization: Bearer abc` keeps the scheme and masks what follows it.
AUTH_SCHEMES: tuple[str, ...] = (
    "aws4-hmac-sha256", "negotiate", "bearer", "digest", "apikey", "api-key", "basic",
    "token", "ntlm", "ssws", "dpop", "hmac", "bot", "key",
)

# Unquoted values that are code or placeholders, not secrets: `def f(password: str)`,
# `"token": null`.
BENIGN_VALUES: frozenset[str] = frozenset(
    {
        "None", "null", "nil", "undefined", "true", "false", "True", "False", "str", "string",
        "bytes", "int", "bool", "SecretStr", "Optional[str]", "str]", "str)",
    }
)

# Provider key shapes: (literal prefix, rest of the regex, left boundary required).
# Every entry starts with a literal (the combined regex gets a first-character prefilter),
# every repetition is possessive or bounded, and every match is at least MIN_TOKEN_LENGTH
# characters from TOKEN_CHARS: redaction.py only searches runs of such characters that long.
# With a left boundary, a match must not follow a letter, digit, `_` or `-`: `task-...` is not
# `sk-...`, and no match can start inside a run another attempt already consumed, which keeps
# the search linear (`-eyJaaa...-eyJaaa...` would otherwise rescan the run from every `-`).
# `sk-` and `hf_` must show an upper-case letter or digit early: `sk-learn-compatible-...` is a
# word, generated keys are mixed case. Matches are replaced whole, except where `_token_repl`
# in redaction.py keeps a readable part.
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/=~"
MIN_TOKEN_LENGTH = 20
PROVIDER_PATTERNS: tuple[tuple[str, str, bool], ...] = (
    # JWT / JWE: header.payload.signature, base64url, the header always `{"...` = `eyJ`
    ("eyJ", r"[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+(?:\.[A-Za-z0-9_-]*+){0,2}", True),
    # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), OpenRouter (sk-or-), DeepSeek
    ("sk-", r"(?=[a-z_-]{0,100}+[A-Z0-9])[A-Za-z0-9_-]{20,}+", True),
    ("sk_live_", r"[A-Za-z0-9]{12,}+", True),  # Stripe secret keys
    ("sk_test_", r"[A-Za-z0-9]{12,}+", True),
    ("rk_live_", r"[A-Za-z0-9]{12,}+", True),  # Stripe restricted keys
    ("rk_test_", r"[A-Za-z0-9]{12,}+", True),
    ("whsec_", r"[A-Za-z0-9+/=]{20,}+", True),  # Stripe webhook signing secret
    ("ghp_", r"[A-Za-z0-9]{30,}+", True),  # GitHub
    ("gho_", r"[A-Za-z0-9]{30,}+", True),
    ("ghu_", r"[A-Za-z0-9]{30,}+", True),
    ("ghs_", r"[A-Za-z0-9]{30,}+", True),
    ("ghr_", r"[A-Za-z0-9]{30,}+", True),
    ("github_pat_", r"[A-Za-z0-9_]{22,}+", True),
    ("glpat-", r"[A-Za-z0-9_-]{20,}+", True),  # GitLab
    ("gldt-", r"[A-Za-z0-9_-]{20,}+", True),
    ("glrt-", r"[A-Za-z0-9_-]{20,}+", True),
    ("glptt-", r"[A-Za-z0-9_-]{20,}+", True),
    ("glsoat-", r"[A-Za-z0-9_-]{20,}+", True),
    ("glcbt-", r"[A-Za-z0-9_-]{20,}+", True),
    ("xoxb-", r"[A-Za-z0-9-]{15,}+", True),  # Slack
    ("xoxa-", r"[A-Za-z0-9-]{15,}+", True),
    ("xoxp-", r"[A-Za-z0-9-]{15,}+", True),
    ("xoxr-", r"[A-Za-z0-9-]{15,}+", True),
    ("xoxs-", r"[A-Za-z0-9-]{15,}+", True),
    ("xoxo-", r"[A-Za-z0-9-]{15,}+", True),
    ("xoxe-", r"[A-Za-z0-9-]{15,}+", True),
    ("xapp-", r"[0-9]-[A-Za-z0-9-]{13,}+", True),
    ("https://hooks.slack.com/", r"(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{8,}+", False),
    ("https://discord.com/api/webhooks/", r"[0-9]{5,}+/[A-Za-z0-9_-]{20,}+", False),
    ("https://discordapp.com/api/webhooks/", r"[0-9]{5,}+/[A-Za-z0-9_-]{20,}+", False),
    ("AKIA", r"[A-Z0-9]{16}(?![A-Za-z0-9])", True),  # AWS access key ids
    ("ASIA", r"[A-Z0-9]{16}(?![A-Za-z0-9])", True),
    ("ABIA", r"[A-Z0-9]{16}(?![A-Za-z0-9])", True),
    ("ACCA", r"[A-Z0-9]{16}(?![A-Za-z0-9])", True),
    ("AIza", r"[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])", True),  # Google API key
    ("ya29.", r"[A-Za-z0-9_-]{20,}+", True),  # Google OAuth access token
    ("GOCSPX-", r"[A-Za-z0-9_-]{20,}+", True),  # Google OAuth client secret
    ("hf_", r"(?=[a-z]{0,100}+[A-Z0-9])[A-Za-z0-9]{30,}+", True),  # Hugging Face
    ("npm_", r"[A-Za-z0-9]{36,}+", True),
    ("pypi-AgEIcHlwaS5vcmc", r"[A-Za-z0-9_-]{50,}+", True),
    ("SG.", r"[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+", True),  # SendGrid
    ("SK", r"[0-9a-fA-F]{32}(?![A-Za-z0-9])", True),  # Twilio API key
    ("dop_v1_", r"[a-f0-9]{64}", True),  # DigitalOcean
    ("doo_v1_", r"[a-f0-9]{64}", True),
    ("dor_v1_", r"[a-f0-9]{64}", True),
    ("shpat_", r"[a-fA-F0-9]{32}", True),  # Shopify
    ("shpca_", r"[a-fA-F0-9]{32}", True),
    ("shppa_", r"[a-fA-F0-9]{32}", True),
    ("shpss_", r"[a-fA-F0-9]{32}", True),
    ("dapi", r"[a-f0-9]{32}(?:-[0-9]{1,3})?(?![A-Za-z0-9])", True),  # Databricks
    ("gsk_", r"[A-Za-z0-9]{40,}+", True),  # Groq
    ("r8_", r"[A-Za-z0-9]{30,}+", True),  # Replicate
    ("pplx-", r"[A-Za-z0-9]{40,}+", True),  # Perplexity
    ("xai-", r"[A-Za-z0-9]{50,}+", True),  # xAI
    ("lsv2_", r"(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}", True),  # LangSmith
    ("sbp_", r"[a-f0-9]{40}", True),  # Supabase
    ("sntrys_", r"[A-Za-z0-9+/=_-]{40,}+", True),  # Sentry
    ("sntryu_", r"[a-f0-9]{64}", True),
    ("hvs.", r"[A-Za-z0-9_-]{20,}+", True),  # HashiCorp Vault
    ("hvb.", r"[A-Za-z0-9_-]{20,}+", True),
    ("ATATT3", r"[A-Za-z0-9_=-]{50,}+", True),  # Atlassian
    ("PMAK-", r"[a-f0-9]{24}-[a-f0-9]{34}", True),  # Postman
    ("lin_api_", r"[A-Za-z0-9]{40}", True),  # Linear
    ("ntn_", r"[A-Za-z0-9]{40,}+", True),  # Notion
    ("secret_", r"[A-Za-z0-9]{43}(?![A-Za-z0-9])", True),
    ("figd_", r"[A-Za-z0-9_-]{40,}+", True),  # Figma
    ("glc_", r"[A-Za-z0-9+/]{32,}+={0,2}+", True),  # Grafana
    ("glsa_", r"[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}", True),
    ("NRAK-", r"[A-Z0-9]{27}", True),  # New Relic
    ("AGE-SECRET-KEY-1", r"[0-9A-Z]{58}", True),  # age
    ("HRKU-", r"[A-Za-z0-9_-]{20,}+", True),  # Heroku
    ("sq0atp-", r"[A-Za-z0-9_-]{22,}+", True),  # Square
    ("sq0csp-", r"[A-Za-z0-9_-]{40,}+", True),
)

# Shapes anchored on an inner literal: Telegram bot tokens `123456789:AA...` (the digits are
# kept) and Azure AD client secrets `abc8Q~...` (the four leading characters are kept).
RAW_PATTERNS: tuple[str, ...] = (
    r":(?<=[0-9]{8}:)AA[A-Za-z0-9_-]{33}(?![A-Za-z0-9_-])",
    r"Q(?<=[A-Za-z0-9_~.]{3}[0-9]Q)~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
)


# --- Matchers built from the tables ----------------------------------------------------------

# Key kinds, weakest to strongest: PLAIN holds no secret; TOKENISH holds one unless the value is
# a number (a count); PWD (a bare `PWD`) unless the value is a path; SECRET always.
PLAIN, TOKENISH, PWD, SECRET = 0, 1, 2, 3

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
IDENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
IDENT_TAIL = re.compile(r"[A-Za-z0-9_.-]*+")
# Separator after a key: optional closing quote of a JSON/quoted key, then = : or =>, but not
# == (comparison), := (walrus), :: (C++/Rust paths).
SEP = re.compile(r"""\\?["'`]?[ \t]*(?:=>|=(?!=)|:(?![:=]))[ \t]*""")
FLAG_SEP = re.compile(r"[ \t]+(?=[^\s-])")  # `--password hunter2`
SCHEME = re.compile(
    r"(?i:" + "|".join(re.escape(s) for s in AUTH_SCHEMES) + r")[ \t]+(?=[^\s\"'`])"
)
UNQUOTED = re.compile(r"""[^\s"'`,;&<>)}]*+""")  # may be empty: `password=\n` has no value
TO_EOL = re.compile(r"""[^\r\n"'`]*+""")  # cookie headers: `a=1; b=2` is all secret
XML_VALUE = re.compile(r"[^<\r\n]*+")
QUOTED = {
    '"': re.compile(r'(?:[^"\\\r\n]|\\.)*+'),
    "'": re.compile(r"(?:[^'\\\r\n]|\\.)*+"),
    "`": re.compile(r"(?:[^`\\\r\n]|\\.)*+"),
}
ESCAPED_QUOTED = re.compile(r'[^"\\\r\n]*+')  # `\"password\": \"x\"` in double-encoded JSON
NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?\Z")
PATH = re.compile(r"(?:/|~/|~\Z|\.{1,2}/|[A-Za-z]:[\\/])")

PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PEM_LEAD = re.compile(r"(?:\s|\\[nr])*+")
PEM_RUN = re.compile(r"[A-Za-z0-9+/=\s\\:,.-]*+")  # body of a block whose END is missing


def _build_token_regex() -> re.Pattern[str]:
    """One alternation over all provider shapes, grouped by first character.

    Every alternative starts with a literal, which lets the regex engine skip positions whose
    character cannot start any of them; the left-boundary lookbehind sits after that literal,
    once per group where it can (each lookbehind costs time at every candidate position).
    """
    groups: dict[str, list[tuple[str, bool]]] = {}
    for prefix, rest, boundary in PROVIDER_PATTERNS:
        groups.setdefault(prefix[0], []).append((re.escape(prefix[1:]) + rest, boundary))
    alternatives = []
    for first, entries in groups.items():
        look = f"(?<![A-Za-z0-9_-]{re.escape(first)})"
        if all(boundary for _, boundary in entries):
            inner = look + "(?:" + "|".join(body for body, _ in entries) + ")"
        else:
            inner = "(?:" + "|".join((look if b else "") + body for body, b in entries) + ")"
        alternatives.append(re.escape(first) + inner)
    alternatives.extend(RAW_PATTERNS)
    return re.compile("|".join(alternatives))


TOKEN_RE = _build_token_regex()
# Maps every character to "x" (can be part of a provider key) or " " (cannot), on an ASCII
# copy of the text whose positions match the original: finding runs of MIN_TOKEN_LENGTH "x"
# with bytes.find is far faster than any regex, and ordinary prose has almost none.
RUN_TABLE = bytes(0x78 if chr(i) in TOKEN_CHARS else 0x20 for i in range(256))
RUN_SEED = b"x" * MIN_TOKEN_LENGTH
# Runs made only of these cannot hold a provider key (see redaction._mask_tokens).
HEX_CHARS = b"0123456789abcdefABCDEF-"
PLAIN_CHARS = b"abcdefghijklmnopqrstuvwxyz_-.+/=~"
# How far before a run a match may start: `https:` before `//hooks.slack.com/...`, the
# `123456789:` of a Telegram bot token.
RUN_LEAD = 12
# scheme://user:password@host. The password may hold '@', so it is the longest run up to the
# last '@' of the authority: bounded, so backtracking is at most 512 steps per '://'.
URL_CREDENTIALS = re.compile(r"""://([^\s:@/?#\[\]"'<>`]{0,256}+):([^\s/?#"'<>`]{1,512})@""")
# `Bearer <token>` / `Basic <base64>` outside a header; `_auth_repl` checks the credential.
AUTH_CREDENTIALS = re.compile(
    r"(?:[Bb]earer|BEARER)[ \t]+([A-Za-z0-9._~+/-]{8,}+=*+)"
    r"|(?:[Bb]asic|BASIC)[ \t]+([A-Za-z0-9+/]{6,}+={0,2}+)"
)

# `curl -u user:password`, `--user`, `--proxy-user`: the password after the first ':'.
# An all-digit "password" is a uid:gid (`docker run -u 1000:1000`) and is left alone.
USER_FLAG = re.compile(
    r"(?<![A-Za-z0-9_-])(?:-u|--user|--proxy-user)(?:[ \t]+|=)"
    r"""(?:"[^":\n]{1,256}:([^"\n]{1,512})"|'[^':\n]{1,256}:([^'\n]{1,512})'"""
    r"""|[^\s:"']{1,256}:([^\s"']{1,512}))"""
)


def is_basic_credential(b64: str) -> bool:
    """`Basic <base64>` is a credential when it decodes to printable `user:password`."""
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in text and text.isprintable()


def key_words(key: str) -> tuple[str, ...]:
    """Split a key name into lower-case words: ``"OPENAI_API_KEY"`` -> ``('openai', 'api',
    'key')``, ``"apiKey"`` -> ``('api', 'key')``; glued words split at known endings
    (``"PGPASSWORD"`` -> ``('pg', 'password')``)."""
    words: list[str] = []
    for raw in _WORD_RE.findall(key):
        word = raw.lower()
        if words and (words[-1], word) in WORD_MERGES:
            words[-1] = WORD_MERGES[(words[-1], word)]
            continue
        words.extend(_split_compound(word))
    return tuple(words)


def _split_compound(word: str) -> tuple[str, ...]:
    if len(word) <= 5 or (word,) in SECRET_PHRASES:
        return (word,)
    for suffix in COMPOUND_SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return (word[: -len(suffix)], suffix)
    for suffix in ("keys", "key"):
        if word.endswith(suffix) and word[: -len(suffix)] in KEY_QUALIFIERS:
            return (word[: -len(suffix)], suffix)
    return (word,)


def classify(words: tuple[str, ...], phrases: frozenset[tuple[str, ...]], max_phrase: int) -> int:
    """The kind of a key from its words: PLAIN, TOKENISH, PWD or SECRET.

    A phrase from `phrases` anywhere in the words makes the key sensitive, unless the key ends
    in a describing word after it (`password_min_length`); `token` after a tokenizer or
    pagination word is not a credential (`eos_token`, `next_page_token`).
    """
    n = len(words)
    if not n:
        return PLAIN
    last = words[-1]
    best = PLAIN
    for i in range(n):
        for length in range(1, min(max_phrase, n - i) + 1):
            phrase = words[i : i + length]
            if phrase not in phrases:
                continue
            if i + length < n and last in DESCRIPTOR_WORDS:
                continue  # `password_min_length`, `token_count`: describes, not holds
            if phrase[-1] in TOKEN_WORDS:
                if length == 1 and i and words[i - 1] in NON_SECRET_TOKEN_QUALIFIERS:
                    continue  # `eos_token`, `next_page_token`
                if i + length == n:
                    return TOKENISH  # the key names a token: `auth_token`, `x-vault-token`
                kind = TOKENISH
            elif phrase == ("pwd",) and n == 1:
                kind = PWD
            else:
                kind = SECRET
            best = max(best, kind)
    if (
        best == PLAIN
        and n > 1
        and last == "pass"
        and words[-2] not in NON_SECRET_PASS_QUALIFIERS
    ):
        best = SECRET  # `DB_PASS`, `smtp_pass`; a bare `pass` is too common a word
    return best

