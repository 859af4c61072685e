"""Test kit: fakes that speak the real wire protocols of the services voicecall talks to."""
