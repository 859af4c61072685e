"""What the loopback carrier fakes (``fake_twilio``, ``fake_telnyx``, ``fake_plivo``) share.

Only carrier-neutral machinery lives here: the uvicorn server and the fake's
lifecycle (``_server``), loopback URL routing and the recorded HTTP exchange
(``_webhooks``), HTTP Basic checking of REST calls (``_rest``), the media-stream
dialer session (``_stream``) and the callee script records (``_model``). Every wire
detail stays in the carrier's own package.
"""
