"""The live service: buses -> pipeline -> journal -> uplink, under systemd."""
