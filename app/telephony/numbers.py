"""Phone numbers: their E.164 form, and which ones the server may dial.

Every number the API takes is normalised to E.164 (`+` and country code, digits only),
so one number has one spelling wherever it is stored or compared. Outbound calls and
transfers dial only numbers of the operator's regions (`SWITCHBOARD_DIAL_COUNTRIES`),
never premium-rate ones; transfers take a SIP URI only when `SWITCHBOARD_ALLOW_SIP_TRANSFER`
is set. The annotated types below carry these rules into every request model.
"""

import re
from typing import Annotated

import phonenumbers
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.settings import Settings, get_settings

SIP_URI = re.compile(r"^sips?:[^\s@]+@[^\s@]+$")


def e164(value: str) -> str:
    """`value` in E.164 form; PydanticCustomError unless it is a possible number with its country code."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not value.startswith("+") or not phonenumbers.is_possible_number(number):
        raise PydanticCustomError(
            "phone_number", "must be a phone number in E.164 form, like +14155550123"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def dial_refusal(settings: Settings, target: str, *, sip: bool = False) -> str | None:
    """Why the server won't dial `target` (a number, or with `sip` a SIP URI), or None."""
    if SIP_URI.match(target):
        if sip and settings.allow_sip_transfer:
            return None
        return (
            "SIP URIs are not allowed on this server"
            if sip
            else "must be a phone number, not a SIP URI"
        )
    try:
        number = phonenumbers.parse(target, None)
    except phonenumbers.NumberParseException:
        return "must be a phone number in E.164 form, like +14155550123"
    region = (
        phonenumbers.region_code_for_number(number)
        if phonenumbers.is_valid_number(number)
        else None
    )
    if region is None:
        return f"{target} is not a valid phone number"
    if region not in settings.dial_countries:
        return (
            f"{target} is in {region}; this server dials only {', '.join(settings.dial_countries)}"
        )
    if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        return f"{target} is a premium-rate number"
    return None


def _dialable(value: str, sip: bool = False) -> str:
    target = value if sip and SIP_URI.match(value) else e164(value)
    if reason := dial_refusal(get_settings(), target, sip=sip):
        raise PydanticCustomError("number_not_dialable", reason)
    return target


E164Number = Annotated[
    str,
    Field(min_length=2, max_length=32, description="E.164, like +14155550123"),
    AfterValidator(e164),
]
DialNumber = Annotated[
    str,
    Field(
        min_length=2,
        max_length=32,
        description="E.164 number in one of the server's dial countries",
    ),
    AfterValidator(_dialable),
]
TransferTarget = Annotated[
    str,
    Field(
        min_length=2,
        max_length=200,
        description="E.164 number in one of the server's dial countries "
        "(or a SIP URI where the server allows SIP transfers)",
    ),
    AfterValidator(lambda value: _dialable(value, sip=True)),
]
