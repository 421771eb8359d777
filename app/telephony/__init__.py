"""Phone calls: Twilio (inbound, outbound, Media Streams), Telnyx and Plivo.

Call flow, inbound:

1. Twilio receives a call on a number and POSTs its form to ``/v1/twilio/voice``
   (or an API client POSTs ``/v1/sessions/twilio``). The server checks the
   ``X-Twilio-Signature``, finds the agent (the number ``To`` is assigned to, or
   ``?agent_id=``), creates a session and a :class:`~app.storage.models.PhoneCall`
   row, and answers TwiML: ``<Connect><Stream url="wss://HOST/v1/sessions/twilio/stream">``
   with a signed, single-use relay token as a ``<Parameter>`` (Twilio strips query
   strings from Stream URLs). See :mod:`app.telephony.twilio` and :mod:`app.telephony.relay`.
2. Twilio opens the Media Streams WebSocket and sends ``connected`` and ``start``;
   :mod:`app.telephony.stream` takes the token from ``start.customParameters``,
   verifies it (signature, expiry, never used before) or closes the socket with a
   code and reason, then runs the agent's pipeline as a
   :class:`~app.telephony.call.PhoneCallSession` with Pipecat's Twilio serializer
   (8 kHz μ-law on the wire, 16 kHz into the pipeline).
3. During the call: barge-in sends ``clear``; a ``mark`` follows each agent utterance
   and its echo stamps the transcript; keypad presses reach the LLM as text.
4. ``stop`` or a dropped socket ends the session; when the agent ends the call, the
   serializer hangs up through Twilio's REST API after the goodbye has played.
   Twilio's status callbacks (``/v1/twilio/status``) move the session through
   ringing → active → completed / failed.

Outbound: ``POST /v1/calls/outbound`` creates the session and a call task and asks
Twilio's REST API to place the call; Twilio then fetches
``/v1/sessions/twilio/task/{id}/connect`` (the same TwiML) and posts status changes
to ``/v1/sessions/twilio/task/{id}/status``. The agent speaks first (its greeting).

Telnyx and Plivo work the same way with their own serializers and XML dialects
(their XML and webhooks: :mod:`app.api.carriers`; their serializers:
:data:`app.telephony.stream.CARRIERS`).
"""
