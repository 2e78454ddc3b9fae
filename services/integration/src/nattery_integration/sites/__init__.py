"""Sites as the integration service knows them: the org that owns each (from device-service's
``device.registered``) and each site's location and PV array (this service's own API)."""
