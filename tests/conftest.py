from tests.mqtt_broker import mqtt_broker, mqtt_pki  # noqa: F401
