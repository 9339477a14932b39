"""Host networking: bridge, taps, NAT (adapters), IPAM and naming (pure logic).

Adapters (``links``, ``monitor``, ``nat``) talk to the kernel and take an optional
``netns`` so tests run inside throw-away network namespaces; ``ipam``, ``tapname``
and ``modes`` are pure and do no I/O.
"""
