"""The development toolkit: the LiveKit-protocol dev server, the network-namespace
harness, simulated sessions and `relay demo`. Not part of the runtime: `relay run`
never imports it, and the dev server needs the `devkit` extra (aiortc)."""
