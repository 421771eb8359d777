"""Redacting personal data from what a call stores (its transcript, webhooks, analysis input)."""

import re
from collections.abc import Callable, Iterable

import phonenumbers

ENTITIES = ("phone", "email", "card", "iban", "ssn")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    text = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in text)) % 97 == 1


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _replace(pattern: re.Pattern, label: str, valid: Callable[[str], bool] = bool):
    def redact(text: str, region: str) -> str:
        return pattern.sub(lambda m: label if valid(m.group()) else m.group(), text)

    return redact


def _phones(text: str, region: str) -> str:
    matches = list(phonenumbers.PhoneNumberMatcher(text, region, phonenumbers.Leniency.POSSIBLE))
    for match in reversed(matches):
        text = text[: match.start] + "[PHONE]" + text[match.end :]
    return text


_REDACTORS = {
    # Cards and IBANs before phone numbers: their digit runs also parse as possible numbers.
    "card": _replace(_CARD, "[CARD]", lambda s: _luhn_valid(_digits(s))),
    "iban": _replace(_IBAN, "[IBAN]", lambda s: _iban_valid(s.replace(" ", ""))),
    "ssn": _replace(_SSN, "[SSN]"),
    "email": _replace(_EMAIL, "[EMAIL]"),
    "phone": _phones,
}


class TranscriptRedactor:
    """Rewrites a call's text before it is stored; the live conversation keeps the original."""

    def redact(self, text: str) -> str:
        return text


class PIIRedactor(TranscriptRedactor):
    """Replaces phone numbers (read by `phonenumbers`, `region` for numbers without a country
    code), email addresses, card numbers (Luhn-checked), IBANs (checksum-checked) and US
    social security numbers with `[PHONE]`, `[EMAIL]`, `[CARD]`, `[IBAN]`, `[SSN]`."""

    def __init__(self, entities: Iterable[str] = ENTITIES, region: str = "US"):
        self._redactors = [_REDACTORS[name] for name in _REDACTORS if name in set(entities)]
        self._region = region

    def redact(self, text: str) -> str:
        for redactor in self._redactors:
            text = redactor(text, self._region)
        return text
