"""The RADIUS front-end: a pyrad-based UDP listener that answers from the gateway's own store.

Modules: ``wire`` (dictionary, decoding, signed replies), ``listener`` (the asyncio endpoint and
daemon component), ``access`` (PAP, policy actions, MFA), ``accounting`` and ``sessions`` (live
sessions per account and NAS), ``disconnect`` (RFC 5176 sender), ``dedup`` (RFC 5080 duplicate
detection), ``cache`` (the optional success cache), ``challenge`` (Access-Challenge State) and
``metrics``.
"""
