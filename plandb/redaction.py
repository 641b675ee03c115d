"""Scrub secrets from anything plandb writes: payloads, action logs, log records.

Agent logs carry whatever a model or a tool touched: API keys in headers, passwords in
connection strings, bearer tokens pasted into prompts. Every payload goes through
:func:`redact` before it is stored, and :class:`RedactingFilter` does the same for stdlib
logging. ::

    >>> redact({"headers": {"x-api-key": "abc123"}, "max_tokens": 4000})
    {'headers': {'x-api-key': '[REDACTED]'}, 'max_tokens': 4000}
    >>> redact('curl -H "Authorization: Bearer abc.def.123" https://api.example.com')
    'curl -H "Authorization: Bearer [REDACTED]" https://api.example.com'

Two kinds of rule, because neither alone is enough (key lists miss secrets inside strings;
value shapes miss a password that looks like any word):

**Key names.** A key is split into lower-case words (``OPENAI_API_KEY``, ``x-api-key``,
``apiKey``, ``PGPASSWORD`` -> ``pg password``) and matched on word *sequences* from
:mod:`plandb.redaction_rules`, never on substrings. The value under a sensitive key becomes the
marker whatever its type (string, number, dict, list), except ``None`` and booleans, which
carry no secret and answer the question people debug ("was a password set?"). The traps this
avoids, each a decision:

- ``tokens`` (plural) counts: ``max_tokens``, ``prompt_tokens``, ``tokens_used`` are kept, and
  finite numbers under any token-ish key are kept (``token: 4000``). ``token``, ``auth_token``,
  ``access_token`` holding text are secrets. ``eos_token``, ``next_page_token`` are not.
- A key that *ends* in a describing word describes the secret instead of holding it:
  ``token_count``, ``password_policy``, ``password_min_length``, ``secret_name``,
  ``api_key_id``, ``private_key_path``, ``token_type``, ``auth_method``.
- ``key`` alone, ``primary_key``, ``keywords``, ``key_id``, ``signature`` (often a function
  signature; request signatures are single-use), ``author``, ``session`` and ``session_id``
  (in plandb a planner session id, needed in logs) are not secrets. Web session cookies
  (``sessionid``, ``PHPSESSID``, ``Cookie`` headers) are.
- A bare ``PWD`` is the working directory in every environment dump: kept when it holds a
  path, masked otherwise (ODBC ``PWD=...``). ``mysql_pwd``, ``db_pass`` are masked.
- In a list, a ``[name, value]`` pair with a sensitive name (ASGI/requests header lists) is
  treated like a dict entry.

**Value shapes in text**, anywhere in any string, masking only the secret and leaving the
text around it readable: PEM private-key blocks, JWTs, ``Bearer``/``Basic`` credentials,
``scheme://user:password@host`` (user and host kept), ``KEY=value``, ``export KEY=value``,
``"key": "value"``, ``key: value``, ``--password value``, ``curl -u user:password``,
``<password>..</password>``, DSNs
(``host=x password=y``, ``Password=y;``) for sensitive key names, and provider key shapes
(OpenAI, Anthropic, AWS, GitHub, GitLab, Slack, Stripe, Google, Hugging Face, npm, SendGrid,
Twilio and more; the table is in :mod:`plandb.redaction_rules`). There is deliberately no
"high entropy string" rule: it would eat git SHAs, UUIDs, sha256 digests and base64 ids, which
logs need. Unquoted values end at whitespace or ``, ; & < > ) }``, so a password containing
those is only partly masked unless quoted.

**Limits.** Strings longer than ``max_string`` are cut and end with `` …[truncated N chars]``;
lists and dicts longer than ``max_items`` keep ``max_items - 1`` entries plus a
``[… N more items]`` entry; containers nested deeper than ``max_depth`` become
``[… max depth reached]``. Redaction runs before the cut, and a cut is only accepted if
redacting its result changes nothing, so ``redact(redact(x)) == redact(x)`` holds and no part
of a secret survives the cut.

**Output** is always serialisable by ``orjson.dumps``: dict keys become ``str`` (``None`` ->
``"null"``, ``True`` -> ``"true"``, numbers by ``str``, others by ``repr``; keys are redacted
too, so two keys may collide and the later one wins), tuples and sets become lists, bytes are
decoded as UTF-8 or replaced by ``[binary data: N bytes]``, lone surrogates are escaped, NaN
and infinities become ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, ints outside 64 bits become
strings, any other object becomes its redacted ``repr`` (``[unrepresentable Type]`` if that
raises), and a container found inside itself becomes ``[circular reference]``.
:func:`redact` never raises and never mutates its input.

**Speed.** Rules run on every stored string, so each pass is guarded by a check that costs one
C-level scan: a substring test (``"://"``, ``"private key"``, a key stem such as ``pass`` or
``token``), and for provider keys an ASCII translation that finds runs of 20+ key characters,
which prose rarely has; only those runs meet the provider regex. Every regex starts with a
literal and is bounded or possessive, and a match cannot start inside a run another attempt
consumed, so none backtracks for long. Most stored text is clean prose, so before the rule
chain one call checks a necessary condition of every guard at once (no run of key characters,
no ``--``/``-u``, no ``earer``/``asic``, no ``://`` or key stem if there is a ``:``, ``=`` or
``>``, nothing to cut, no surrogate, no extra pattern) and returns text that passes as it is.
Short strings already found clean are remembered, and the walk handles clean short text, None,
bools and ints inline, without a call per value. (Serialising a payload with orjson and
checking its JSON text instead of walking it was measured and dropped: the key-stem scan over
the whole text and the type check orjson's output needs cost nearly what the walk does.)
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

from . import redaction_rules as rules

__all__ = [
    "BINARY_TEMPLATE",
    "CIRCULAR_MARKER",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_STRING",
    "DEFAULT_REDACTOR",
    "DEPTH_MARKER",
    "MORE_ITEMS_KEY",
    "MORE_ITEMS_TEMPLATE",
    "REDACTED",
    "TRUNCATED_TEMPLATE",
    "UNREPRESENTABLE_TEMPLATE",
    "RedactingFilter",
    "Redactor",
    "redact",
]

REDACTED: Final = "[REDACTED]"
TRUNCATED_TEMPLATE: Final = " …[truncated {n} chars]"  # the space ends any value before it
MORE_ITEMS_TEMPLATE: Final = "[… {n} more items]"
MORE_ITEMS_KEY: Final = "[… more items]"  # the dict key that holds MORE_ITEMS_TEMPLATE
DEPTH_MARKER: Final = "[… max depth reached]"
CIRCULAR_MARKER: Final = "[circular reference]"
BINARY_TEMPLATE: Final = "[binary data: {n} bytes]"
UNREPRESENTABLE_TEMPLATE: Final = "[unrepresentable {type}]"

DEFAULT_MAX_STRING: Final = 64 * 1024
DEFAULT_MAX_ITEMS: Final = 1000
DEFAULT_MAX_DEPTH: Final = 32


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson serialises natively
# Text past max_string + this margin is dropped before scanning: no bounded pattern is longer,
# and unbounded ones (values, base64 runs) mask through the end of the kept text.
_PRECUT_MARGIN = 4096
_MAX_KEY_IN_TEXT = 120  # longer "identifiers" in text are data, not key names
_KEY_CACHE_SIZE = 4096
_CLEAN_MAX = 80  # strings up to this long that needed no change are remembered ...
_CLEAN_CACHE_SIZE = 8192  # ... this many of them

_MARKER_OK = re.compile(r"[A-Za-z0-9_\[\]*!~+=.-]{1,64}\Z")


def _type_name(value: object) -> str:
    try:
        return str(type(value).__qualname__)
    except Exception:
        return "object"


class Redactor:
    """Redacts JSON-like values and text with one set of rules and size limits.

    :param extra_keys: more key names to treat as secret, in any spelling (``"ssn"``,
        ``"cardNumber"``); they are split into words like the built-in ones.
    :param extra_patterns: more regexes (strings or compiled) whose matches are secret in any
        text; if a pattern has a group named ``secret``, only that group is masked. Keep them
        anchored and bounded: they run on every string.
    :param max_string: longest string kept, in characters (at least 64).
    :param max_items: most entries kept per list or dict (at least 1).
    :param max_depth: most container levels kept (1 to 256).
    :param marker: replacement text; letters, digits and ``_[]*!~+=.-`` only, so that no rule
        can match it or stop halfway through it.
    :raises ValueError: for limits out of range, an unusable marker, or a pattern that matches
        the marker or the empty string.
    """

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        extra_patterns: Iterable[str | re.Pattern[str]] = (),
        max_string: int = DEFAULT_MAX_STRING,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        marker: str = REDACTED,
    ) -> None:
        if max_string < 64:
            raise ValueError(f"max_string={max_string} is too small; use at least 64")
        if max_items < 1:
            raise ValueError(f"max_items={max_items} must be at least 1")
        if not 1 <= max_depth <= 256:
            # The walk is recursive; 256 levels stay far below Python's recursion limit.
            raise ValueError(f"max_depth={max_depth} must be between 1 and 256")
        if not isinstance(marker, str) or not _MARKER_OK.match(marker):
            raise ValueError(
                f"marker {marker!r} must be 1-64 characters from letters, digits and _[]*!~+=.- "
                "so that redacting twice changes nothing; try '[REDACTED]' or '***'"
            )
        self.max_string = max_string
        self.max_items = max_items
        self.max_depth = max_depth
        self.marker = marker

        extra_phrases = {rules.key_words(k) for k in extra_keys} - {()}
        self._phrases = rules.SECRET_PHRASES | extra_phrases
        self._max_phrase = max(len(p) for p in self._phrases)
        stems = set(rules.TEXT_STEMS) | {w for p in extra_phrases for w in p if w.isalpha()}
        self._stems = tuple(sorted(stems))
        variants = {v for s in stems for v in (s, s.capitalize(), s.upper())}
        self._stem_re = re.compile("|".join(sorted(variants, key=len, reverse=True)))
        self._extra: list[re.Pattern[str]] = []
        for pattern in extra_patterns:
            compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
            if compiled.search(marker) or compiled.fullmatch(""):
                raise ValueError(
                    f"extra pattern {compiled.pattern!r} matches the marker or the empty "
                    "string, so redacting twice would keep changing the text"
                )
            self._extra.append(compiled)
        # Longest text `_quiet` may pass: longer text is cut; extra patterns must always run.
        self._quiet_max = -1 if self._extra else max_string
        self._key_cache: dict[str, int] = {}
        self._clean: set[str] = set()
        for probe in ("password=", "token: ", "Authorization: Bearer ", "x "):
            if self._scan(probe + marker) != probe + marker:
                raise ValueError(f"marker {marker!r} is itself matched by a redaction rule")

    def __repr__(self) -> str:
        return (
            f"Redactor(max_string={self.max_string}, max_items={self.max_items}, "
            f"max_depth={self.max_depth}, marker={self.marker!r})"
        )

    # --- public ---------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """Return a redacted, orjson-serialisable copy of `value`. Never raises or mutates."""
        try:
            if type(value) is dict and self.max_depth:
                # What _walk -> _container do for a top-level dict (the common payload),
                # without the two calls.
                return self._dict(value, 1, {id(value)})
            return self._walk(value, 0, set())
        except Exception:
            # A container mutated by another thread mid-walk, a hostile __len__ ...: losing
            # the value is better than raising on a logging path or writing it unredacted.
            return self.marker

    def redact_text(self, text: str) -> str:
        """Mask secrets inside `text` and cut it to `max_string`. Never raises."""
        try:
            if type(text) is not str:
                text = str.__str__(text) if isinstance(text, str) else self._repr(text)
            return self._text(text)
        except Exception:
            return self.marker

    def is_sensitive_key(self, key: str) -> bool:
        """True when values under `key` are masked (bare ``PWD``: unless the value is a path)."""
        try:
            return self._key_kind(key if type(key) is str else self._key_text(key)) != rules.PLAIN
        except Exception:
            return True

    # --- keys -----------------------------------------------------------------------------

    def _key_kind(self, key: str) -> int:
        kind = self._key_cache.get(key)
        if kind is None:
            kind = rules.classify(rules.key_words(key), self._phrases, self._max_phrase)
            if len(key) <= 200:
                if len(self._key_cache) >= _KEY_CACHE_SIZE:
                    self._key_cache.clear()
                self._key_cache[key] = kind
        return kind

    def _sensitive_value(self, value: Any, kind: int, depth: int, active: set[int]) -> Any:
        if value is None or type(value) is bool:
            return value
        if kind == rules.TOKENISH and (
            (isinstance(value, int) and _INT_MIN <= value <= _INT_MAX)
            or (isinstance(value, float) and math.isfinite(value))
        ):
            # `token: 4000` is a count. Numbers that would come out as strings (NaN, beyond
            # 64 bits) are masked: a second pass could not tell them from text.
            return self._walk(value, depth, active)
        if kind == rules.PWD and isinstance(value, str) and rules.PATH.match(value):
            return self._walk(value, depth, active)  # `PWD=/home/me` is a directory
        return self.marker

    def _key_text(self, key: Any) -> str:
        if type(key) is str:
            text = key
        elif key is None or type(key) is bool:
            text = {None: "null", True: "true", False: "false"}[key]
        elif isinstance(key, (int, float)):
            text = str(self._walk(key, 0, set()))
        elif isinstance(key, (bytes, bytearray)):
            return str(self._bytes(key))
        else:
            text = str.__str__(key) if isinstance(key, str) else self._repr(key)
        return self._text(text)

    # --- values ---------------------------------------------------------------------------

    def _walk(self, value: Any, depth: int, active: set[int]) -> Any:
        t = type(value)
        if t is str:
            if len(value) <= _CLEAN_MAX and value in self._clean:
                return value  # the common case, without a call
            return self._text(value)
        if value is None or t is bool:
            return value
        if t is int:
            return value if _INT_MIN <= value <= _INT_MAX else self._big_int(value)
        if t is float:
            return value if math.isfinite(value) else self._float_name(value)
        if t is dict or t is list or t is tuple:
            return self._container(value, depth, active)
        if isinstance(value, str):
            return self._text(str.__str__(value))
        if isinstance(value, int):  # IntEnum, numpy-free int subclasses
            return self._walk(int.__int__(value), depth, active)
        if isinstance(value, float):
            return self._walk(float.__float__(value), depth, active)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(value)
        if isinstance(value, (dict, list, tuple, set, frozenset, deque)):
            return self._container(value, depth, active)
        return self._text(self._repr(value))

    def _container(self, value: Any, depth: int, active: set[int]) -> Any:
        if depth >= self.max_depth:
            return DEPTH_MARKER
        oid = id(value)
        if oid in active:
            return CIRCULAR_MARKER
        active.add(oid)
        try:
            if isinstance(value, dict):
                return self._dict(value, depth + 1, active)
            return self._sequence(value, depth + 1, active)
        finally:
            active.discard(oid)

    def _dict(self, value: dict[Any, Any], depth: int, active: set[int]) -> dict[str, Any]:
        size = len(value)
        keep = size if size <= self.max_items else self.max_items - 1
        out: dict[str, Any] = {}
        clean, kinds = self._clean, self._key_cache
        items = dict.items(value)
        for key, item in items if keep == size else islice(items, keep):
            # Keys repeat across payloads: known-clean text and cached kinds skip the calls.
            # (No length guard before `in`: a dict key's hash is already computed.)
            if type(key) is str and key in clean:
                text = key
            else:
                text = self._key_text(key)
            kind = kinds.get(text)
            if kind is None:
                kind = self._key_kind(text)
            if kind:
                out[text] = self._sensitive_value(item, kind, depth, active)
                continue
            # `_walk` inlined for the common leaves (clean short text, None, bools, ints):
            # most values are one of those, and a call per value is most of the cost.
            t = type(item)
            if t is str:
                out[text] = item if len(item) <= _CLEAN_MAX and item in clean else self._text(item)
            elif item is None or t is bool or (t is int and _INT_MIN <= item <= _INT_MAX):
                out[text] = item
            elif t is dict or t is list or t is tuple:
                out[text] = self._container(item, depth, active)
            else:
                out[text] = self._walk(item, depth, active)
        if keep < size:
            out[MORE_ITEMS_KEY] = MORE_ITEMS_TEMPLATE.format(n=size - keep)
        return out

    def _sequence(self, value: Any, depth: int, active: set[int]) -> list[Any]:
        items = value if isinstance(value, (list, tuple)) else list(value)
        size = len(items)
        keep = size if size <= self.max_items else self.max_items - 1
        out: list[Any] = []
        clean = self._clean
        for item in items if keep == size else islice(items, keep):
            t = type(item)  # common leaves inlined, as in `_dict`
            if t is str:
                out.append(item if len(item) <= _CLEAN_MAX and item in clean else self._text(item))
                continue
            if item is None or t is bool or (t is int and _INT_MIN <= item <= _INT_MAX):
                out.append(item)
                continue
            # A [name, value] pair in a list is a header list (ASGI, requests): treat the name
            # like a dict key. Only when the pair itself is within the depth limit.
            if (
                (t is list or t is tuple)
                and len(item) == 2
                and type(item[0]) in (str, bytes)
                and depth < self.max_depth
            ):
                head = self._walk(item[0], depth + 1, active)
                kind = self._key_kind(head) if type(head) is str else rules.PLAIN
                if kind:
                    out.append([head, self._sensitive_value(item[1], kind, depth + 1, active)])
                    continue
            if t is dict or t is list or t is tuple:
                out.append(self._container(item, depth, active))
            else:
                out.append(self._walk(item, depth, active))
        if keep < size:
            out.append(MORE_ITEMS_TEMPLATE.format(n=size - keep))
        return out

    def _bytes(self, value: bytes | bytearray | memoryview) -> str:
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BINARY_TEMPLATE.format(n=len(raw))
        return self._text(text)

    def _big_int(self, value: int) -> str:
        try:
            return str(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            return f"[int: {value.bit_length()} bits]"

    @staticmethod
    def _float_name(value: float) -> str:
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")

    def _repr(self, value: object) -> str:
        try:
            text = repr(value)
            if type(text) is not str:
                raise TypeError("__repr__ returned a non-string")
            return text
        except Exception:
            return UNREPRESENTABLE_TEMPLATE.format(type=_type_name(value))

    # --- text -----------------------------------------------------------------------------

    def _text(self, text: str) -> str:
        size = len(text)
        if size <= _CLEAN_MAX and text in self._clean:
            return text
        original = text
        if not self._quiet(text):
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except (
                    UnicodeEncodeError
                ):  # lone surrogates (surrogateescape'd paths): orjson refuses them
                    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            dropped = 0
            if size > self.max_string + _PRECUT_MARGIN:
                dropped = size - self.max_string - _PRECUT_MARGIN
                text = text[: self.max_string + _PRECUT_MARGIN]
            text = self._scan(text)
            if dropped or len(text) > self.max_string:
                return self._cut(text, dropped)
        if text is original and size <= _CLEAN_MAX:
            # Log payloads repeat short values ("info", "tool_call", model names); remember
            # the ones known to be clean. Strings that held a secret are never kept.
            if len(self._clean) >= _CLEAN_CACHE_SIZE:
                self._clean.clear()
            self._clean.add(original)
        return text

    def _quiet(self, text: str) -> bool:
        """True when `_text` may return `text` as it is without running a rule.

        Each check is a necessary condition for a cut, the surrogate escape, or one guard in
        `_scan_once`, all C-level scans in one frame; prose passes them all. False only means
        "maybe": the full path decides. The checks that catch most secrets come first, so
        that text holding one wastes little here.
        """
        if len(text) > self._quiet_max:
            return False  # to be cut, or extra patterns to run
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            return False  # lone surrogates get escaped
        # Provider keys need a run of MIN_TOKEN_LENGTH key characters. Those are ASCII, so
        # UTF-8 bytes of other characters map to non-key bytes, like the "?" in _mask_tokens.
        if (
            len(raw) >= rules.MIN_TOKEN_LENGTH
            and raw.translate(rules.RUN_TABLE).find(rules.RUN_SEED) >= 0
        ):
            return False
        if "-" in text and ("--" in text or "-u" in text):
            return False  # PEM blocks (-----BEGIN), --flags, curl -u
        low = text.lower()
        if "earer" in low or "asic" in low:
            return False  # Bearer / Basic credentials
        if ":" in text or "=" in text or ">" in text:
            if "://" in text:
                return False  # URL passwords
            for stem in self._stems:  # what `_stem_hits` looks for
                if stem in low:
                    return False  # `key=value`, `key: value`, `<key>value` pairs
        return True

    def _cut(self, text: str, dropped: int) -> str:
        """Cut redacted `text` to fit max_string with a truncation suffix.

        A cut can leave a dangling `password=` or half a marker, which a second redaction
        would treat differently; so each candidate cut is re-scanned and accepted only if
        nothing changes. The last candidate (suffix alone) always passes.
        """
        room = self.max_string - len(TRUNCATED_TEMPLATE.format(n=len(text) + dropped))
        candidates: list[int] = []
        space = max(text.rfind(" ", max(0, room - 256), room), text.rfind("\n", 0, room))
        if space > 0 and space > room - 256:
            candidates.append(space)
            earlier = text.rfind(" ", max(0, space - 1024), space)
            if earlier > 0:
                candidates.append(earlier)
        candidates += [room, 0]
        for cut in candidates:
            out = text[:cut] + TRUNCATED_TEMPLATE.format(n=len(text) - cut + dropped)
            if self._scan(out) == out:
                return out
        return out  # unreachable: the suffix alone never matches a rule

    def _scan(self, text: str) -> str:
        """Apply every text rule until nothing changes (a mask can expose another match).

        Each rule is guarded by a check that costs one C-level pass (a substring test, an
        ASCII translation), so text with nothing to mask pays little.
        """
        if len(text) < 5:
            return text
        for _ in range(4):
            new = self._scan_once(text)
            if new is text or new == text:
                break
            text = new
        return text

    def _scan_once(self, text: str) -> str:
        # `low` serves the substring checks (and the stem search when it lines up with
        # `text`); it is recomputed only after a rule changed the text, which is rare.
        low = text.lower()
        if "private key" in low:
            new = self._mask_pem(text)
            if new is not text:
                text, low = new, new.lower()
        if len(text) >= rules.MIN_TOKEN_LENGTH:
            new = self._mask_tokens(text)
            if new is not text:
                text, low = new, new.lower()
        if "://" in text:
            new = rules.URL_CREDENTIALS.sub(self._url_repl, text)
            if new is not text:
                text, low = new, new.lower()
        if "-u" in text:
            new = rules.USER_FLAG.sub(self._user_flag_repl, text)
            if new is not text:
                text, low = new, new.lower()
        if "earer" in low or "asic" in low:
            new = rules.AUTH_CREDENTIALS.sub(self._auth_repl, text)
            if new is not text:
                text, low = new, new.lower()
        if ":" in text or "=" in text or ">" in text or "--" in text:
            text = self._mask_assignments(text, low)
        for pattern in self._extra:
            text = pattern.sub(self._extra_repl, text)
        return text

    def _mask_tokens(self, text: str) -> str:
        """Mask provider key shapes, searching only long runs of key characters."""
        ascii_text = text.encode("ascii", "replace")
        runs = ascii_text.translate(rules.RUN_TABLE)
        run = runs.find(rules.RUN_SEED)
        if run < 0:
            return text
        out: list[str] = []
        last = 0
        search = rules.TOKEN_RE.search
        while run >= 0:
            end = runs.find(b" ", run)
            if end < 0:
                end = len(text)
            chunk = ascii_text[run:end]
            if not chunk.strip(rules.HEX_CHARS) or not chunk.translate(None, rules.PLAIN_CHARS):
                # Hex runs (git SHAs, UUIDs, digests) and runs of lower-case words (`raise_for_
                # status`) are common in logs and cannot hold a key: every prefix has a non-hex
                # letter, and every generated key has a digit or an upper-case letter.
                run = runs.find(rules.RUN_SEED, end)
                continue
            pos = max(last, run - rules.RUN_LEAD)
            while (match := search(text, pos, end)) is not None:
                out.append(text[last : match.start()])
                out.append(self._token_repl(match))
                last = pos = match.end()
            run = runs.find(rules.RUN_SEED, end)
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _token_repl(self, match: re.Match[str]) -> str:
        """The replacement for a provider-shaped match."""
        text = match.group(0)
        marker = self.marker
        first = text[0]
        if first == ":":
            return ":" + marker  # Telegram: keep the bot id
        if first == "Q":
            return "Q~" + marker  # Azure: the 4 characters before Q~ are kept
        if first == "h" and text.startswith("https://"):  # webhook: keep the fixed path part
            fixed = 5 if "/webhooks/" in text else 4
            return "/".join(text.split("/", fixed)[:fixed]) + "/" + marker
        return marker

    def _url_repl(self, match: re.Match[str]) -> str:
        password = match.group(2)
        if password == self.marker or password.startswith(self.marker + "@"):
            return match.group(0)  # already masked (`:[REDACTED]@@...`: the '@'s are not ours)
        return f"://{match.group(1)}:{self.marker}@"  # keep scheme, user and host

    def _user_flag_repl(self, match: re.Match[str]) -> str:
        group = next(g for g in (1, 2, 3) if match.group(g) is not None)
        password = match.group(group)
        if password.startswith(self.marker) or password.isdigit():
            return match.group(0)  # already masked (the rest is not ours), or a uid:gid
        start, end = match.span(group)
        text, offset = match.group(0), match.start()
        return text[: start - offset] + self.marker + text[end - offset :]

    def _auth_repl(self, match: re.Match[str]) -> str:
        text = match.group(0)
        start = match.start()
        if start and match.string[start - 1].isalnum():
            return text  # `xBearer ...` is some other word
        bearer, basic = match.group(1), match.group(2)
        if bearer is not None:
            # A generated token has a digit, or mixes cases over some length; words such as
            # `Bearer authentication.` or `Bearer token-based` have neither.
            looks_secret = any(c.isdigit() for c in bearer) or (
                len(bearer) >= 16 and not bearer.islower() and not bearer.isupper()
            )
            credential = bearer
        else:
            looks_secret = rules.is_basic_credential(basic)
            credential = basic
        return text[: -len(credential)] + self.marker if looks_secret else text

    def _extra_repl(self, match: re.Match[str]) -> str:
        if "secret" in match.re.groupindex and match.group("secret") is not None:
            start, end = match.span("secret")
            whole_start = match.start()
            text = match.group(0)
            return text[: start - whole_start] + self.marker + text[end - whole_start :]
        return self.marker

    def _mask_pem(self, text: str) -> str:
        out: list[str] = []
        last = 0
        # One END search serves every BEGIN before it, so many BEGINs stay linear.
        end_match: re.Match[str] | None = None
        end_searched_from = -1
        for begin in rules.PEM_BEGIN.finditer(text):
            if begin.start() < last:
                continue
            body_start = rules.PEM_LEAD.match(text, begin.end()).end()
            if end_searched_from < 0 or (end_match is not None and end_match.start() < body_start):
                end_match = rules.PEM_END.search(text, body_start)
                end_searched_from = body_start
            if end_match is not None:
                body_end = end_match.start()
                while body_end > body_start and (
                    text[body_end - 1] in " \t\r\n"
                    or text.endswith(("\\n", "\\r"), body_start, body_end)
                ):
                    body_end -= 1 if text[body_end - 1] in " \t\r\n" else 2
            else:
                body_end = rules.PEM_RUN.match(text, body_start).end()
                while body_end > body_start and text[body_end - 1] in " \t\r\n\\":
                    body_end -= 1
            if body_end <= body_start or text[body_start:body_end] == self.marker:
                continue
            out.append(text[last:body_start])
            out.append(self.marker)
            last = body_end
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _mask_assignments(self, text: str, low: str) -> str:
        """Mask the value of every `key=value`-shaped pair whose key is sensitive."""
        hits = self._stem_hits(text, low)
        if not hits:
            return text
        out: list[str] = []
        last = 0
        pos = 0
        size = len(text)
        for hit in hits:
            if hit < pos:
                continue
            start = hit
            floor = max(pos, start - _MAX_KEY_IN_TEXT)
            while start > floor and text[start - 1] in rules.IDENT_CHARS:
                start -= 1
            too_long = start == floor > pos and text[start - 1] in rules.IDENT_CHARS
            end = rules.IDENT_TAIL.match(text, hit).end()
            pos = end
            if too_long or end - start > _MAX_KEY_IN_TEXT or end >= size:
                continue  # a run this long is data (base64, a path), not a key name
            if text.endswith("://", 0, start):
                continue  # `https://x-access-token:...@host` is a URL user; the URL rule owns it
            key = text[start:end]
            span = self._value_span(text, start, end, key)
            if span is None:
                continue
            value_start, value_end = span
            out.append(text[last:value_start])
            out.append(self.marker)
            last = pos = value_end
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _stem_hits(self, text: str, low: str) -> list[int]:
        """Sorted positions of key-word stems (`pass`, `token`, ...) in any letter case."""
        if len(low) != len(text):  # a few non-ASCII letters lower-case to two characters
            return [m.start() for m in self._stem_re.finditer(text)]
        hits: list[int] = []
        for stem in self._stems:
            i = low.find(stem)
            while i >= 0:
                hits.append(i)
                i = low.find(stem, i + len(stem))
        hits.sort()
        return hits

    def _value_span(self, text: str, start: int, end: int, key: str) -> tuple[int, int] | None:
        """Where the secret value after `key` lies, or None if `key` holds no secret."""
        kind = self._key_kind(key)
        spaced = not kind and start > 1 and text[start - 1] == " "
        if not kind and not spaced:
            return None  # most stems sit in ordinary words: decide before any regex runs
        if kind and text[start - 1] == "<" and text[end] == ">":  # <password>x</password>
            value_start = end + 1
            value_end = rules.XML_VALUE.match(text, value_start).end()
            return self._accept(text, value_start, value_end, kind, quoted=True)
        sep = rules.SEP.match(text, end)
        if sep is None and key.startswith("--"):
            sep = rules.FLAG_SEP.match(text, end)
        if sep is None:
            return None
        if spaced:
            kind = self._spaced_key_kind(text, start, end)
            if not kind:
                return None
        p = sep.end()
        if p >= len(text):
            return None
        if text.startswith('\\"', p):
            value_end = rules.ESCAPED_QUOTED.match(text, p + 2).end()
            return self._accept(text, p + 2, value_end, kind, quoted=True)
        quote = text[p]
        if quote in rules.QUOTED:
            p += 1
            scheme = rules.SCHEME.match(text, p)
            value_end = rules.QUOTED[quote].match(text, p).end()
            value_start = scheme.end() if scheme is not None and scheme.end() < value_end else p
            return self._accept(text, value_start, value_end, kind, quoted=True)
        scheme = rules.SCHEME.match(text, p)
        if scheme is not None:
            p = scheme.end()
        if "cookie" in key.lower():
            value_end = rules.TO_EOL.match(text, p).end()
            while value_end > p and text[value_end - 1] in " \t":
                value_end -= 1
        else:
            value_end = rules.UNQUOTED.match(text, p).end()
        return self._accept(text, p, value_end, kind, quoted=False)

    def _spaced_key_kind(self, text: str, start: int, end: int) -> int:
        """`API Key: x`, `Secret Access Key = x`: the key is the last two or three words."""
        space = start - 1
        for _ in range(2):
            floor = max(0, space - 21)
            before = text.rfind(" ", floor, space)
            if before < 0 and floor > 0:
                return rules.PLAIN  # the word before is too long to be part of a key name
            word = text[before + 1 : space]
            if not (2 <= len(word) <= 20 and word.isascii() and word.isalpha()):
                return rules.PLAIN
            kind = self._key_kind(text[before + 1 : end])
            if kind or before < 1:
                return kind
            space = before
        return rules.PLAIN

    def _accept(
        self, text: str, start: int, end: int, kind: int, *, quoted: bool
    ) -> tuple[int, int] | None:
        if end <= start:
            return None
        value = text[start:end]
        if value == self.marker:
            return None
        if not quoted:
            if value in rules.BENIGN_VALUES:
                return None
            if kind == rules.TOKENISH and rules.NUMBER.match(value):
                return None
        if kind == rules.PWD and rules.PATH.match(value):
            return None
        return start, end


DEFAULT_REDACTOR: Final = Redactor()


def redact(value: Any) -> Any:
    """Redact `value` with :data:`DEFAULT_REDACTOR`; see :meth:`Redactor.redact`."""
    return DEFAULT_REDACTOR.redact(value)


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class RedactingFilter(logging.Filter):
    """A logging filter that redacts records in place and never drops one.

    It formats ``msg % args``, redacts the result into ``msg`` and clears ``args`` (a dict or
    list ``msg`` without args is redacted as a value; if formatting fails, every arg becomes
    the marker, since an argument's meaning came from its place in the message); redacts
    string and container ``extra=`` fields (masking those under sensitive names), the
    formatted traceback and ``stack_info``. Attach it to *handlers*: a filter on a logger does
    not see records propagated from its children. ::

        handler.addFilter(RedactingFilter())
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else DEFAULT_REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._scrub(record)
        except Exception:
            record.msg, record.args = self.redactor.marker, ()
        return True

    def _scrub(self, record: logging.LogRecord) -> None:
        r = self.redactor
        if isinstance(record.msg, (dict, list)) and not record.args:
            record.msg = r.redact(record.msg)  # keep structure for structured handlers
        else:
            try:
                message = record.getMessage()
            except Exception:
                # Formatting is broken and logging will print msg and args as they are. An
                # argument's meaning came from its place in the message, which is now lost, so
                # none of them can be judged: keep how many there were, not what they held.
                record.msg = r.redact_text(record.msg)
                args = record.args
                if isinstance(args, dict):
                    record.args = dict.fromkeys(r.redact(list(args)), r.marker)
                else:
                    record.args = (r.marker,) * len(args) if isinstance(args, tuple) else r.marker
            else:
                record.msg, record.args = r.redact_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact_text(record.stack_info)
        for name, value in list(vars(record).items()):
            if name in _RECORD_ATTRS:
                continue
            kind = r._key_kind(name)
            if kind:
                setattr(record, name, r._sensitive_value(value, kind, 0, set()))
            elif isinstance(value, (str, dict, list, tuple)):
                setattr(record, name, r.redact(value))
