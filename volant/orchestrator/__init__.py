"""The domain actors: root tree, VMs, deployments, taps, events, plugins."""
