"""One masking engine for everything appvitals writes out: structured logs and HTTP captures.

A :class:`Masker` returns a masked deep copy of any value: dicts, lists, tuples and sets are
walked, every string is scanned for secrets, and the whole value under a sensitive key is
replaced with ``***``. Strings are masked by *value patterns* (e-mail addresses, card
numbers that pass Luhn, IBANs that pass mod-97, bearer and basic credentials, JWTs, API keys
of well-known shapes, URL passwords, PEM private keys, and ``key=value`` pairs whose key is
sensitive), so a secret in a free-text log message is masked too.

Key matching: a key is split into words (at ``-``, ``_``, ``.``, spaces and camelCase
humps: ``x-api-key``, ``clientSecret`` and ``DB_PASSWORD`` become ``x api key``,
``client secret`` and ``db password``). It is sensitive when one word, or several adjacent
words written together, is a sensitive name (``api`` + ``key`` is ``apikey``). Whole words
keep ``author``, ``authority``, ``pinned`` and ``spin`` apart from ``auth`` and ``pin``.
A few distinctive names also match inside a word (``dbpassword``, ``xapikey``) and a few
at its end (``accesstoken``, ``mysecret``); ``auth``, ``session``, ``pin`` and ``pan``
count only as the last word (``basic_auth`` but not ``auth_method``). A key that ends
with a qualifier such as ``count``, ``type``, ``length`` or ``url`` describes a secret
without holding it (``token_count``, ``token_type``, ``password_length``) and is not
sensitive.

Masking runs on every log line, so it is built to be cheap and bounded: patterns are
precompiled and only run when a cheap substring test says they could match, strings
already known to be clean are remembered, every regular expression runs in linear time,
strings longer than ``max_string`` are truncated before matching, containers deeper than
``max_depth`` (or containing themselves) are cut. Masking never raises: a value whose
masking fails becomes the replacement, and the error is counted and logged once through
:func:`appvitals._safety.report_internal_error`.

Examples:
    >>> from appvitals.masking import mask
    >>> mask({"user": "ada", "password": "hunter2", "note": "card 4111 1111 1111 1111"})
    {'user': 'ada', 'password': '***', 'note': 'card ***'}
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote_plus

from appvitals._safety import report_internal_error

__all__ = [
    "DEFAULT_KEYS",
    "PATTERNS",
    "REPLACEMENT",
    "Masker",
    "configure_masking",
    "default_masker",
    "mask",
    "mask_headers",
    "mask_text",
    "mask_url",
]

REPLACEMENT = "***"

# Names (normalised: lowercase letters and digits only) that match inside a word as well as
# whole: long and distinctive enough that no innocent word contains them.
_CONTAINS_TERMS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "credential",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "privkey",
        "clientsecret",
        "authorization",
        "sessionid",
        "setcookie",
        "creditcard",
        "cardnumber",
        "csrftoken",
        "xsrftoken",
    }
)
# Names that also match at the end of a word (``accesstoken``), never at its start
# (``tokenizer``, ``secretary``).
_SUFFIX_TERMS = frozenset({"secret", "secrets", "token", "cookie", "cookies", "signature"})
# Short names that mean something else as a first word (``auth_method``, ``pin_count``):
# they count only as the last word of a key.
_WEAK_TERMS = frozenset({"auth", "session", "pin", "pan"})
# Names that match as whole words, or as adjacent words written together.
_WORD_TERMS = frozenset(
    {
        "pwd",
        "authheader",
        "sessionkey",
        "sessiontoken",
        "csrf",
        "xsrf",
        "ssn",
        "iban",
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "pincode",
        "securitycode",
        "otp",
        "jwt",
        "bearer",
    }
)

DEFAULT_KEYS: frozenset[str] = _CONTAINS_TERMS | _SUFFIX_TERMS | _WEAK_TERMS | _WORD_TERMS
"""The sensitive key names masked by default, normalised (lowercase, letters and digits)."""

# A last word that makes the key *about* a secret rather than the secret itself.
_QUALIFIERS = frozenset(
    {
        "count",
        "counts",
        "total",
        "num",
        "len",
        "length",
        "size",
        "type",
        "types",
        "kind",
        "limit",
        "limits",
        "max",
        "min",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "at",
        "enabled",
        "disabled",
        "required",
        "valid",
        "url",
        "uri",
        "endpoint",
        "path",
        "file",
        "dir",
        "name",
        "version",
        "algorithm",
        "alg",
        "method",
        "scheme",
        "status",
        "format",
        "policy",
    }
)

PATTERNS: tuple[str, ...] = (
    "private_key",
    "url_credentials",
    "bearer",
    "basic",
    "jwt",
    "email",
    "api_key",
    "iban",
    "card",
    "key_value",
)
"""Names of the built-in value patterns, in the order they run (all on by default)."""

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# Every expression below runs in linear time: a repeat that could fail and be retried from
# the next character is either bounded or preceded by a lookbehind that only lets it start
# at the beginning of a run. The lookbehind sits after the first character or literal
# prefix, so that most positions fail on that first test, before any lookbehind runs.
_PRIVATE_KEY = re.compile(
    r"(?P<head>-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
    r"(?s:.*?(?P<tail>-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)|.*)"
)
_URL_CREDENTIALS = re.compile(
    r"[A-Za-z](?<![A-Za-z0-9+.\-][A-Za-z])[A-Za-z0-9+.\-]{0,31}://"
    r"(?P<userinfo>[^\s/?#\"'<>`]*)@"
)
_BEARER = re.compile(r"\b(?P<scheme>(?i:bearer)[ \t]{1,16})(?P<token>[A-Za-z0-9\-._~+/=]{8,})")
_BASIC = re.compile(r"\b(?P<scheme>(?i:basic)[ \t]{1,16})(?P<token>[A-Za-z0-9+/]{4,}={0,2})")
_JWT = re.compile(
    r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{2,}(?:\.[A-Za-z0-9_\-]*){1,3}"
)
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-](?<![A-Za-z0-9._%+\-][A-Za-z0-9._%+\-])(?<!://[A-Za-z0-9._%+\-])"
    r"[A-Za-z0-9._%+\-]*@(?:[A-Za-z0-9\-]{1,63}\.)+[A-Za-z]{2,63}"
)
_API_KEY = re.compile(
    r"[sr]k_(?:live|test)_(?<![A-Za-z0-9][sr]k_(?:live|test)_)[A-Za-z0-9]{10,}"
    r"|sk-(?<![A-Za-z0-9_\-]sk-)[A-Za-z0-9_\-]{17,}"
    r"|gh[pousr]_(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{20,}"
    r"|github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{20,}"
    r"|glpat-(?<![A-Za-z0-9_\-]glpat-)[A-Za-z0-9_\-]{20,}"
    r"|xox[baprs]-(?<![A-Za-z0-9]xox[baprs]-)[A-Za-z0-9\-]{10,}"
    r"|A[KS]IA[0-9A-Z]{16,99}"
    r"|AIza[0-9A-Za-z_\-]{35,99}"
    r"|npm_[A-Za-z0-9]{36,99}"
)
_IBAN = re.compile(
    r"[A-Z]{2}(?<![A-Za-z0-9][A-Z]{2})[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])"
)
# A run of digit groups (single spaces or dashes between them) holding at least 13 digits and
# starting where a card number could (2-6: the major networks); which of its groups form a
# card number is decided by _card_groups.
_CARD = re.compile(
    r"[2-6](?<![0-9][2-6])(?=(?:[ \-]?[0-9]){12})[0-9]{0,18}(?:[ \-][0-9]{1,19})*(?![0-9])"
)
_CARD_SEPARATOR = re.compile(r"([ \-])")
_KV_KEY = re.compile(
    # (?=(?P<rest>…))(?P=rest) takes the whole word without backtracking (an atomic group).
    r"(?P<name>[A-Za-z_](?<![A-Za-z0-9_][A-Za-z_])(?=(?P<rest>[A-Za-z0-9_.\-]{0,63}))(?P=rest))"
    r"(?P<quote>\\?[\"'])?[ \t]{0,3}(?P<sep>[=:])[ \t]{0,3}"
)
_KV_QUOTED = (
    r"\"(?:[^\"\\\n]|\\.){0,8192}\""
    r"|'[^'\n]{0,8192}'"
    r"|\\\"(?:[^\"\\\n]|\\[^\"\n]){0,8192}\\\""
)
_KV_SCHEME = r"(?P<scheme>(?i:bearer|basic|digest|token|negotiate)[ \t]{1,16})?"
_KV_VALUE = re.compile(
    rf"(?P<quoted>{_KV_QUOTED})|{_KV_SCHEME}[^\s&;\"'<>{{}}\[\]]+|[\"'][^\s\"']*"
)
# After a quoted key (JSON), a comma ends an unquoted value: {"pin":1234,"id":5}.
_KV_VALUE_JSON = re.compile(
    rf"(?P<quoted>{_KV_QUOTED})|{_KV_SCHEME}[^\s&;,\"'<>{{}}\[\]]+|[\"'][^\s\"']*"
)
_KV_LINE_KEYS = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})
_LINE = re.compile(r"[^\r\n\"']+")
_API_KEY_MIN_LEN = 15  # the shortest shape: xoxb- and 10 characters
_MIN_SECRET_LEN = 5  # the shortest text a built-in pattern masks: "pin=1"
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-.~+/=%]{20,}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_HEADER_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~\-]*")

_MAX_DEPTH_MARKER = "<max depth>"
_CYCLE_MARKER = "<cycle>"
_CACHE_SIZE = 4096
_CLEAN_MAX_LEN = 160  # only short strings are remembered as clean: they repeat, long ones rarely
_TRUNCATE_BACKOFF = 256  # how far back a truncation looks for whitespace to cut at
_GROUPED_SECRET_LEN = 48  # longer than a grouped card number (37) or IBAN (42)
_AUTHORIZATION_HEADERS = frozenset({"authorization", "proxyauthorization"})


def _shape_table() -> bytes:
    table = bytearray(b"." * 256)
    for code in range(128):
        char = chr(code)
        if char.isdigit():
            table[code] = ord("0")
        elif char.isupper():
            table[code] = ord("A")
        elif char.islower() or char == "_":
            table[code] = ord("a")
        elif char in "=:":
            table[code] = ord("=")
        elif char in "\"'\\":
            table[code] = ord('"')
        elif char in " \t":
            table[code] = ord(" ")
    return bytes(table)


# A text's shape: each ASCII digit becomes 0, letter A or a (and _ a), = and : become =,
# quotes and backslash ", space and tab a space, anything else a dot.
_SHAPE = _shape_table()


def _maybe_api_key(text: str) -> bool:
    return (
        "k_" in text
        or "sk-" in text
        or "gh" in text
        or "github_pat_" in text
        or "glpat-" in text
        or "xox" in text
        or "IA" in text
        or "AIza" in text
        or "npm_" in text
    )


def _normalise(key: str) -> str:
    return "".join(char for char in key.lower() if char.isalnum())


_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # 2d, minus 9 when that is above 9


def _card_groups(groups: list[str]) -> list[bool]:
    """Which digit groups belong to a card number: 13-19 digits, a 2-6 start, Luhn valid.

    Every group of every valid reading is marked: in "22 4111 1111 1111 1111" both
    "22 4111 1111 1111" and "4111 1111 1111 1111" pass Luhn, and either may be the card.
    Luhn sums run from the right, so each group's sum is kept for both parities of the
    digits to its right, and ranges are grown leftwards from each end: linear in the run.
    """
    as_last: list[int] = []  # the group's sum when its last digit is the number's last
    shifted: list[int] = []  # ... when an odd number of digits follows it
    for group in groups:
        plain = other = 0
        for index, char in enumerate(reversed(group)):
            digit = ord(char) - 48
            if index % 2:
                plain += _LUHN_DOUBLED[digit]
                other += digit
            else:
                plain += digit
                other += _LUHN_DOUBLED[digit]
        as_last.append(plain)
        shifted.append(other)
    covered = [False] * len(groups)
    for end in range(len(groups)):
        total = digits = 0
        first = -1
        for start in range(end, -1, -1):
            total += shifted[start] if digits % 2 else as_last[start]
            digits += len(groups[start])
            if digits > 19:
                break
            if digits >= 13 and groups[start][0] in "23456" and total % 10 == 0:
                first = start
        if first >= 0:
            covered[first : end + 1] = [True] * (end + 1 - first)
    return covered


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34 or compact[2:4] in {"00", "01", "99"}:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _basic_credentials(token: str) -> bool:
    """Whether ``token`` is base64 of ``user:password`` (prose like "basic usage" is not)."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _header_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")  # how HTTP defines header bytes
    return str(value)


class Masker:
    """Masks secrets in values, text, URLs and headers; immutable once built.

    Args:
        keys: the sensitive key names, replacing :data:`DEFAULT_KEYS` (normalised:
            case, ``-``, ``_``, ``.`` and spaces do not matter). ``None`` keeps the default.
        extra_keys: more sensitive key names, added to ``keys``. They match as whole words
            of a key, or as adjacent words written together (``"order_ref"`` masks
            ``orderRef`` and ``x-order-ref``).
        patterns: the names of the built-in value patterns to run (see :data:`PATTERNS`);
            ``None`` runs all of them.
        extra_patterns: ``(name, regex)`` pairs run after the built-in ones; a match is
            replaced whole, or only its group named ``secret`` if the regex has one. Keep
            them linear (no nested unbounded repeats): they run on every log line.
        replacement: what a secret becomes.
        max_depth: containers nested deeper than this become ``"<max depth>"``.
        max_string: strings (and bytes) longer than this are truncated before matching,
            with a ``…[truncated N chars]`` marker.

    Raises:
        ValueError: an unknown pattern name, an invalid regex or a limit below 0 (1 for
            ``max_string``).

    Examples:
        >>> masker = Masker(extra_keys=["order_ref"], extra_patterns=[("ticket", r"TCK-\\d{6}")])
        >>> masker.mask({"orderRef": "A-17", "note": "see TCK-123456", "author": "ada"})
        {'orderRef': '***', 'note': 'see ***', 'author': 'ada'}
    """

    __slots__ = (
        "_api_key",
        "_basic",
        "_bearer",
        "_card",
        "_clean",
        "_contains",
        "_email",
        "_extra",
        "_iban",
        "_jwt",
        "_key_cache",
        "_keys",
        "_kv",
        "_longest",
        "_max_depth",
        "_max_string",
        "_patterns",
        "_private_key",
        "_replacement",
        "_suffixes",
        "_url",
        "_weak",
    )

    def __init__(
        self,
        *,
        keys: Iterable[str] | None = None,
        extra_keys: Iterable[str] = (),
        patterns: Iterable[str] | None = None,
        extra_patterns: Iterable[tuple[str, str | re.Pattern[str]]] = (),
        replacement: str = REPLACEMENT,
        max_depth: int = 12,
        max_string: int = 65536,
    ) -> None:
        if max_depth < 0 or max_string < 1:
            raise ValueError(f"invalid masking limits: {max_depth=}, {max_string=}")
        terms = set(DEFAULT_KEYS if keys is None else map(_normalise, keys))
        terms.update(map(_normalise, extra_keys))
        terms.discard("")
        self._keys = frozenset(terms)
        self._contains = tuple(sorted(_CONTAINS_TERMS & terms))
        self._suffixes = tuple(sorted(_SUFFIX_TERMS & terms))
        self._weak = _WEAK_TERMS & terms
        self._longest = max(map(len, terms), default=0)
        names = PATTERNS if patterns is None else tuple(patterns)
        unknown = sorted(set(names) - set(PATTERNS))
        if unknown:
            raise ValueError(f"unknown masking patterns {unknown}; known: {list(PATTERNS)}")
        self._patterns = tuple(name for name in PATTERNS if name in names)
        self._private_key = "private_key" in names
        self._url = "url_credentials" in names
        self._bearer = "bearer" in names
        self._basic = "basic" in names
        self._jwt = "jwt" in names
        self._email = "email" in names
        self._api_key = "api_key" in names
        self._iban = "iban" in names
        self._card = "card" in names
        self._kv = "key_value" in names
        extra: list[tuple[str, re.Pattern[str]]] = []
        for name, regex in extra_patterns:
            try:
                extra.append((name, re.compile(regex)))
            except re.error as error:  # noqa: PERF203 - runs once, when the masker is built
                raise ValueError(
                    f"masking pattern {name!r} is not a valid regex: {error}"
                ) from None
        self._extra = tuple(extra)
        self._replacement = replacement
        self._max_depth = max_depth
        self._max_string = max_string
        self._key_cache: dict[str, tuple[bool, str]] = {}
        self._clean: set[str] = set()

    @property
    def keys(self) -> frozenset[str]:
        """The normalised sensitive key names."""
        return self._keys

    @property
    def patterns(self) -> tuple[str, ...]:
        """The names of the built-in value patterns that run."""
        return self._patterns

    @property
    def replacement(self) -> str:
        """What a secret becomes."""
        return self._replacement

    # -- keys ---------------------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Whether the value under ``key`` is a secret (see the module docstring for the rule).

        Examples:
            >>> masker = Masker()
            >>> [masker.is_sensitive_key(k) for k in ("x-api-key", "authToken", "db_password")]
            [True, True, True]
            >>> [masker.is_sensitive_key(k) for k in ("author", "pinned", "token_count")]
            [False, False, False]
        """
        untyped: object = key  # callers outside mypy pass ints, bytes, None
        if not isinstance(untyped, str):
            return False
        try:
            cached = self._key_cache.get(key)
            if cached is None:
                cached = self._remember_key(key)
            return cached[0]
        except Exception as error:
            report_internal_error("masking", error)
            return True  # unsure: treat the key as sensitive

    def _remember_key(self, key: str) -> tuple[bool, str]:
        key = str.__str__(key)  # a plain str, also for str subclasses (enums)
        info = (self._classify(key), self._text(key))
        if len(self._key_cache) >= _CACHE_SIZE:
            self._key_cache.clear()  # keys are few in practice: a full cache means junk keys
        self._key_cache[key] = info
        return info

    def _classify(self, key: str) -> bool:
        if _normalise(key) in self._keys:
            return True
        words = [word.lower() for word in _WORD.findall(key)]
        if not words:
            return False
        last = len(words) - 1
        # "token_count": a match that stops before a qualifying last word does not count.
        qualified = last > 0 and words[last] in _QUALIFIERS
        for start, word in enumerate(words):
            joined = ""
            for end in range(start, last + 1):
                joined += words[end]
                if len(joined) > self._longest:
                    break
                if joined in self._keys and (
                    end == last or (not qualified and joined not in self._weak)
                ):
                    return True
            if start == last or not qualified:
                if any(term in word for term in self._contains):
                    return True
                if any(word.endswith(term) for term in self._suffixes):
                    return True
        return False

    # -- containers -----------------------------------------------------------------------

    def mask(self, value: Any) -> Any:
        """A deep copy of ``value`` with its secrets masked.

        Dicts (any mapping) come back as dicts, lists as lists, tuples as tuples, sets as
        sets and frozensets as frozensets; strings are masked by the value patterns; bytes
        that are UTF-8 come back as masked bytes, other bytes as ``"<N bytes binary>"``;
        anything else (numbers, ``None``, objects) is returned as is. The whole value under
        a sensitive key becomes the replacement, whatever its type.

        Examples:
            >>> Masker().mask([{"token": {"id": 1}}, ("ada@example.com", 42), b"pwd=s3cret"])
            [{'token': '***'}, ('***', 42), b'pwd=***']
        """
        try:
            return self._walk(value, 1, set())
        except Exception as error:  # _walk catches its own errors; this is the last resort
            report_internal_error("masking", error)
            return self._replacement

    def mask_mapping(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """A masked copy of ``mapping`` (a log event, a JSON body) as a plain dict.

        Examples:
            >>> Masker().mask_mapping({"event": "login", "password": "hunter2", "user_id": 7})
            {'event': 'login', 'password': '***', 'user_id': 7}
        """
        try:
            return self._mapping(mapping, 1, set())
        except Exception as error:
            report_internal_error("masking", error)
            return {}

    def _walk(self, value: Any, depth: int, active: set[int]) -> Any:  # noqa: PLR0911 - by type
        try:
            kind = type(value)
            if kind is str:
                return self._text(value)
            if kind is int or kind is float or kind is bool or value is None:
                return value
            if kind is dict or isinstance(value, Mapping):
                return self._container(value, depth, active)
            if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
                return self._container(value, depth, active)
            if isinstance(value, str):  # a str enum, say: masked as the plain str it holds
                plain = str.__str__(value)
                masked = self._text(plain)
                return value if masked == plain else masked
            if isinstance(value, (bytes, bytearray, memoryview)):
                return self._bytes(value)
            return value
        except Exception as error:
            report_internal_error("masking", error)
            return self._replacement

    def _container(self, value: Any, depth: int, active: set[int]) -> Any:  # noqa: PLR0911
        if depth > self._max_depth:
            return _MAX_DEPTH_MARKER
        ident = id(value)
        if ident in active:
            return _CYCLE_MARKER
        active.add(ident)
        try:
            if isinstance(value, Mapping):
                return self._mapping(value, depth, active)
            depth += 1
            items = [self._walk(item, depth, active) for item in value]
            if isinstance(value, list):
                return items
            if isinstance(value, tuple):
                return tuple(items)
            if isinstance(value, frozenset):
                return frozenset(items)
            return set(items)
        finally:
            active.discard(ident)

    def _mapping(self, mapping: Mapping[Any, Any], depth: int, active: set[int]) -> dict[Any, Any]:
        masked: dict[Any, Any] = {}
        cache = self._key_cache
        depth += 1
        for key, value in mapping.items():
            if type(key) is str or isinstance(key, str):
                info = cache.get(key)
                if info is None:
                    info = self._remember_key(key)
                if info[0]:
                    masked[info[1]] = self._replacement
                    continue
                key = info[1]  # noqa: PLW2901 - the key itself is masked by the value patterns
            masked[key] = self._walk(value, depth, active)
        return masked

    def _bytes(self, value: bytes | bytearray | memoryview) -> bytes | str:
        data = value.tobytes() if isinstance(value, memoryview) else bytes(value)
        size = len(data)
        truncated = size > self._max_string
        if truncated:
            data = data[: self._max_string]
        text = None
        # A cut may split a multi-byte character: drop up to 3 bytes of it.
        for trim in range(4 if truncated else 1):
            try:
                text = data[: len(data) - trim].decode("utf-8")
            except UnicodeDecodeError:
                continue
            break
        if text is None:
            return f"<{size} bytes binary>"
        if not truncated:
            masked = self._text(text)
            return data if masked == text else masked.encode("utf-8")
        text = self._back_off(text)
        kept = len(text.encode("utf-8"))
        return f"{self._text(text)}…[truncated {size - kept} bytes]".encode()

    # -- text -------------------------------------------------------------------------------

    def mask_text(self, text: str) -> str:
        """``text`` with every secret found by the value patterns masked.

        Examples:
            >>> Masker().mask_text("paid with 5555-5555-5555-4444, mail ada@example.com")
            'paid with ***, mail ***'
            >>> Masker().mask_text("curl -H 'Authorization: Bearer abc.def-123' ?token=xyz")
            "curl -H 'Authorization: Bearer ***' ?token=***"
        """
        try:
            return self._text(text if type(text) is str else str.__str__(text))
        except Exception as error:
            report_internal_error("masking", error)
            return self._replacement

    def _text(self, text: str) -> str:
        size = len(text)
        marker = ""
        if size > self._max_string:
            text, marker = self._truncate(text)
        elif size <= _CLEAN_MAX_LEN and text in self._clean:
            return text
        masked = self._builtin(text) if size >= _MIN_SECRET_LEN else text
        for _name, pattern in self._extra:
            masked = pattern.sub(self._sub_extra, masked)
        if size <= _CLEAN_MAX_LEN and masked == text:
            if len(self._clean) >= _CACHE_SIZE:
                self._clean.clear()
            self._clean.add(text)  # only text without secrets is ever remembered
        return masked + marker

    def _builtin(self, text: str) -> str:
        # Each pattern runs only when a substring it needs is present: `in` on a str and
        # counting in a bytes "shape" of the text are much cheaper than a regex scan. The
        # order matters: URLs before e-mail addresses (user:pass@host), bearer before JWT.
        if "PRIVATE KEY" in text and self._private_key:
            text = _PRIVATE_KEY.sub(self._sub_private_key, text)
        if "://" in text and self._url:
            text = _URL_CREDENTIALS.sub(self._sub_url, text)
        if ("earer" in text or "EARER" in text) and self._bearer:
            text = _BEARER.sub(self._sub_bearer, text)
        if ("asic" in text or "ASIC" in text) and self._basic:
            text = _BASIC.sub(self._sub_basic, text)
        if "eyJ" in text and self._jwt:
            text = _JWT.sub(self._replacement, text)
        if "@" in text and self._email:
            text = _EMAIL.sub(self._replacement, text)
        if self._api_key and len(text) >= _API_KEY_MIN_LEN and _maybe_api_key(text):
            text = _API_KEY.sub(self._replacement, text)
        shape = text.encode("utf-8", "surrogatepass").translate(_SHAPE)
        digits = shape.count(b"0")
        if digits >= 2 and self._iban and b"AA00" in shape:
            text = _IBAN.sub(self._sub_iban, text)
        if digits >= 13 and self._card:
            text = _CARD.sub(self._sub_card, text)
        if self._kv and (
            b"a=" in shape
            or b"A=" in shape
            or b'"=' in shape
            or b" =" in shape
            or b"a0=" in shape
            or b"A0=" in shape
        ):
            text = self._key_values(text)
        return text

    def _truncate(self, text: str) -> tuple[str, str]:
        """The first ``max_string`` characters of ``text`` and the marker that replaces the rest."""
        cut = self._back_off(text[: self._max_string])
        return cut, f"…[truncated {len(text) - len(cut)} chars]"

    @staticmethod
    def _back_off(cut: str) -> str:
        """``cut`` without the part of a secret that the cut may have split in two."""
        # A half secret no longer matches its pattern, so end the text at whitespace instead.
        near = max(0, len(cut) - _TRUNCATE_BACKOFF)
        space = max(cut.rfind(" ", near), cut.rfind("\n", near))
        if space > 0:
            cut = cut[:space]
        if cut[-1:].isdigit():
            # Card numbers and IBANs are written in groups with spaces: drop trailing groups.
            keep = max(0, len(cut) - _GROUPED_SECRET_LEN)
            cut = cut[:keep] + cut[keep:].rstrip("0123456789 -")
        return cut

    def _sub_private_key(self, match: re.Match[str]) -> str:
        return f"{match['head']}{self._replacement}{match['tail'] or ''}"

    def _sub_url(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        userinfo = match["userinfo"]
        prefix = whole[: len(whole) - len(userinfo) - 1]
        return f"{prefix}{self._userinfo(userinfo)}@"

    def _userinfo(self, userinfo: str) -> str:
        user, colon, _password = userinfo.partition(":")
        # A user without a password is often an access token itself (https://<token>@host).
        token = _TOKEN_LIKE.fullmatch(user) and any(char.isdigit() for char in user)
        if token or (user and self._text(user) != user):
            user = self._replacement
        return f"{user}:{self._replacement}" if colon else user

    def _sub_bearer(self, match: re.Match[str]) -> str:
        token = match["token"]
        # "bearer authentication" is prose; tokens have digits or punctuation, or are long.
        if len(token) < 20 and token.isalpha():
            return match.group(0)
        return f"{match['scheme']}{self._replacement}"

    def _sub_basic(self, match: re.Match[str]) -> str:
        if not _basic_credentials(match["token"]):
            return match.group(0)
        return f"{match['scheme']}{self._replacement}"

    def _sub_iban(self, match: re.Match[str]) -> str:
        candidate = match.group(0)
        # The match may run on into the next words ("DE89 3704 … 00 EUR"): try the longest
        # prefix that ends at a space first.
        ends = [index for index, char in enumerate(candidate) if char == " "]
        ends.append(len(candidate))
        for end in reversed(ends):
            if _iban_valid(candidate[:end].replace(" ", "")):
                return self._replacement + candidate[end:]
        return candidate

    def _sub_card(self, match: re.Match[str]) -> str:
        parts = _CARD_SEPARATOR.split(match.group(0))
        groups = parts[0::2]
        separators = parts[1::2]
        covered = _card_groups(groups)
        if not any(covered):
            return match.group(0)
        out: list[str] = []
        last = len(groups) - 1
        for index, group in enumerate(groups):
            if not covered[index]:
                out.append(group)
            elif index == 0 or not covered[index - 1]:
                out.append(self._replacement)  # one replacement for a run of covered groups
            if index < last and not (covered[index] and covered[index + 1]):
                out.append(separators[index])
        return "".join(out)

    def _sub_extra(self, match: re.Match[str]) -> str:
        if "secret" in match.re.groupindex and match["secret"] is not None:
            whole = match.group(0)
            start, end = match.span("secret")
            offset = match.start()
            return whole[: start - offset] + self._replacement + whole[end - offset :]
        return self._replacement

    def _key_values(self, text: str) -> str:
        pieces: list[str] = []
        done = 0
        cache = self._key_cache
        for key in _KV_KEY.finditer(text):
            if key.start() < done:
                continue  # inside a value masked already
            name = key["name"]
            if not (cache.get(name) or self._remember_key(name))[0]:
                continue
            value_at = key.end()
            if key["sep"] == ":" and not key["quote"] and _normalise(name) in _KV_LINE_KEYS:
                value = _LINE.match(text, value_at)  # "Cookie: a=1; b=2" up to the line's end
                masked = self._header_value(_normalise(name), value.group(0)) if value else ""
            else:
                value = (_KV_VALUE_JSON if key["quote"] else _KV_VALUE).match(text, value_at)
                masked = self._kv_value(value, bool(key["quote"])) if value else ""
            if value is None:
                continue
            pieces.append(text[done:value_at])
            pieces.append(masked)
            done = value.end()
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)

    def _kv_value(self, value: re.Match[str], json_key: bool) -> str:
        quoted = value["quoted"]
        if quoted:
            quote_mark = '\\"' if quoted.startswith("\\") else quoted[0]
            return f"{quote_mark}{self._replacement}{quote_mark}"
        scheme = value["scheme"] or ""
        if json_key and not scheme:
            return f'"{self._replacement}"'  # a JSON number or literal: keep the JSON valid
        return f"{scheme}{self._replacement}"

    # -- URLs and headers -------------------------------------------------------------------

    def mask_url(self, url: str) -> str:
        """``url`` with its password, a token-like user and sensitive query values masked.

        The path and non-sensitive query values are masked by the value patterns (an
        e-mail address in a path, a JWT in a ``state`` parameter); percent-encoded values
        are decoded first. Text that is not a URL is masked as text.

        Examples:
            >>> Masker().mask_url("https://ada:s3cret@[::1]:8443/x?page=2&access_token=abc#top")
            'https://ada:***@[::1]:8443/x?page=2&access_token=***#top'
        """
        try:
            text, marker = self._truncate(url) if len(url) > self._max_string else (url, "")
            base, hash_mark, fragment = text.partition("#")
            head, question_mark, query = base.partition("?")
            scheme_end = head.find("://")
            if scheme_end > 0 and _SCHEME.fullmatch(head, 0, scheme_end):
                start = scheme_end + 3
                slash = head.find("/", start)
                end = len(head) if slash < 0 else slash
                userinfo, at, host = head[start:end].rpartition("@")
                authority = f"{self._userinfo(userinfo)}@{host}" if at else host
                head = head[:start] + authority + self._text(head[end:])
            else:
                head = self._text(head)
            if question_mark:
                query = self._query(query)
            if hash_mark:
                fragment = self._query(fragment) if "=" in fragment else self._text(fragment)
            return f"{head}{question_mark}{query}{hash_mark}{fragment}{marker}"
        except Exception as error:
            report_internal_error("masking", error)
            return self._replacement

    def _query(self, query: str) -> str:
        parts = query.split("&")
        for index, part in enumerate(parts):
            name, equals, value = part.partition("=")
            plain_name = unquote_plus(name)
            if equals and self.is_sensitive_key(plain_name):
                parts[index] = f"{name}={self._replacement}"
                continue
            # Values are percent-encoded: decode them for the patterns (ada%40example.com).
            masked_name = self._text(plain_name)
            if masked_name != plain_name:
                name = quote(masked_name, safe="*")
            plain_value = unquote_plus(value)
            masked_value = self._text(plain_value)
            if masked_value != plain_value:
                value = quote(masked_value, safe="*")
            parts[index] = f"{name}{equals}{value}"
        return "&".join(parts)

    def mask_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Masked ``(name, value)`` pairs, in order and with duplicates kept.

        ``Authorization`` keeps its scheme (``Bearer ***``), ``Cookie`` and ``Set-Cookie``
        keep the cookie names (``session=***``), other sensitive headers become ``***`` and
        the rest are masked by the value patterns. Accepts a mapping (``multi_items()`` is
        used when it has one, as httpx and Starlette headers do) or pairs; bytes are decoded
        as Latin-1.

        Examples:
            >>> headers = [("Authorization", "Bearer abc123"), ("Accept", "*/*"),
            ...            ("Set-Cookie", "sid=1; Path=/"), ("Set-Cookie", "theme=dark")]
            >>> for name, value in Masker().mask_headers(headers):
            ...     print(f"{name}: {value}")
            Authorization: Bearer ***
            Accept: */*
            Set-Cookie: sid=***; Path=/
            Set-Cookie: theme=***
        """
        masked: list[tuple[str, str]] = []
        try:
            if isinstance(headers, Mapping):
                multi_items = getattr(headers, "multi_items", None)
                pairs: Iterable[Any] = multi_items() if callable(multi_items) else headers.items()
            else:
                pairs = headers
            for pair in pairs:
                name = _header_text(pair[0])
                try:
                    masked.append((name, self._header(name, _header_text(pair[1]))))
                except Exception as error:
                    report_internal_error("masking", error)
                    masked.append((name, self._replacement))
        except Exception as error:
            report_internal_error("masking", error)
        return masked

    def _header(self, name: str, value: str) -> str:
        if not self.is_sensitive_key(name):
            return self._text(value)
        return self._header_value(_normalise(name), value)

    def _header_value(self, normalised: str, value: str) -> str:
        if normalised in _AUTHORIZATION_HEADERS:
            scheme, space, _credentials = value.strip().partition(" ")
            if space and _HEADER_SCHEME.fullmatch(scheme):
                return f"{scheme} {self._replacement}"
            return self._replacement
        if normalised == "cookie":
            cookies = (part.strip().partition("=") for part in value.split(";"))
            return "; ".join(
                f"{name}={self._replacement}" if equals else self._replacement
                for name, equals, _ in cookies
                if name or equals
            )
        if normalised == "setcookie":
            first, semicolon, attributes = value.partition(";")
            name, equals, _ = first.strip().partition("=")
            cookie = f"{name}={self._replacement}" if equals else self._replacement
            return f"{cookie}{semicolon}{attributes}"
        return self._replacement


_default: Masker | None = None
_default_lock = threading.Lock()


def default_masker() -> Masker:
    """The process-wide masker, built on first use (see :func:`configure_masking`).

    Examples:
        >>> default_masker() is default_masker()
        True
    """
    global _default  # noqa: PLW0603 - one process-wide masker, built lazily
    masker = _default
    if masker is None:
        with _default_lock:
            if _default is None:
                _default = Masker()
            masker = _default
    return masker


def configure_masking(
    *,
    keys: Iterable[str] | None = None,
    extra_keys: Iterable[str] = (),
    patterns: Iterable[str] | None = None,
    extra_patterns: Iterable[tuple[str, str | re.Pattern[str]]] = (),
    replacement: str = REPLACEMENT,
    max_depth: int = 12,
    max_string: int = 65536,
) -> Masker:
    """Replace the process-wide masker with one built from these :class:`Masker` arguments.

    Called with no arguments, it restores the default.

    Examples:
        >>> _ = configure_masking(extra_keys=["member_no"])
        >>> mask({"member_no": "M-1", "plan": "gold"})
        {'member_no': '***', 'plan': 'gold'}
        >>> _ = configure_masking()
        >>> mask({"member_no": "M-1"})
        {'member_no': 'M-1'}
    """
    global _default  # noqa: PLW0603 - one process-wide masker
    masker = Masker(
        keys=keys,
        extra_keys=extra_keys,
        patterns=patterns,
        extra_patterns=extra_patterns,
        replacement=replacement,
        max_depth=max_depth,
        max_string=max_string,
    )
    with _default_lock:
        _default = masker
    return masker


def mask(value: Any) -> Any:
    """Mask ``value`` with the process-wide masker (:meth:`Masker.mask`).

    Examples:
        >>> mask({"Authorization": "Bearer abc", "path": "/cb?code=1&client_secret=x"})
        {'Authorization': '***', 'path': '/cb?code=1&client_secret=***'}
    """
    return default_masker().mask(value)


def mask_text(text: str) -> str:
    """Mask ``text`` with the process-wide masker (:meth:`Masker.mask_text`).

    Examples:
        >>> mask_text("jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl done")
        'jwt=*** done'
    """
    return default_masker().mask_text(text)


def mask_url(url: str) -> str:
    """Mask ``url`` with the process-wide masker (:meth:`Masker.mask_url`).

    Examples:
        >>> mask_url("postgresql://app:pa55@db:5432/prod?sslmode=require")
        'postgresql://app:***@db:5432/prod?sslmode=require'
    """
    return default_masker().mask_url(url)


def mask_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Mask ``headers`` with the process-wide masker (:meth:`Masker.mask_headers`).

    Examples:
        >>> mask_headers({"X-Api-Key": "k-123", "Content-Type": "application/json"})
        [('X-Api-Key', '***'), ('Content-Type', 'application/json')]
    """
    return default_masker().mask_headers(headers)
