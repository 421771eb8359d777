"""What `pii_redactor` takes out of stored text, and what it leaves."""

import pytest

from processors.pii import PIIRedactor

pytestmark = pytest.mark.storage_free


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Call me on (415) 555-0132.", "Call me on [PHONE]."),
        ("My number is +44 20 7946 0958", "My number is [PHONE]"),
        ("Write to jane.doe+spam@mail.example.co.uk today", "Write to [EMAIL] today"),
        ("Card 4111 1111 1111 1111 expires soon", "Card [CARD] expires soon"),
        ("Card 4111-1111-1111-1111", "Card [CARD]"),
        ("Amex 378282246310005.", "Amex [CARD]."),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please"),
        ("SSN 123-45-6789", "SSN [SSN]"),
        # Not personal data, or failing its checksum: kept.
        ("Order 12345 arrives on May 5 at 10:30.", "Order 12345 arrives on May 5 at 10:30."),
        ("Card 4111 1111 1111 1112", "Card 4111 1111 1111 1112"),
        ("IBAN GB83 WEST 1234 5698 7654 32", "IBAN GB83 WEST 1234 5698 7654 32"),
        ("We open at nine.", "We open at nine."),
    ],
)
def test_redacts_listed_entities(text, redacted):
    assert PIIRedactor().redact(text) == redacted


def test_only_the_entities_asked_for_and_phone_numbers_by_region():
    text = "Mail a@b.co or call 020 7946 0958"
    assert PIIRedactor(["email"]).redact(text) == "Mail [EMAIL] or call 020 7946 0958"
    assert PIIRedactor(["phone"], region="GB").redact(text) == "Mail a@b.co or call [PHONE]"
