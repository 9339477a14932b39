"""``python -m kestrel`` -- how the initramfs /init starts the agent."""

from kestrel.main import main

raise SystemExit(main())
