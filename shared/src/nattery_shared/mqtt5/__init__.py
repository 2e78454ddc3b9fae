"""MQTT 5 on raw asyncio streams: a QoS 1 subscriber that acknowledges after durable storage, and the
packet codec a fast publisher shares with it.

- :mod:`.wire`: packets as bytes, pure functions (encode CONNECT/SUBSCRIBE/PUBLISH/PUBACK, decode in
  bulk from a read buffer);
- :mod:`.client`: :class:`~.client.AckingSubscriber` (persistent session, Receive Maximum as
  back-pressure, PUBACK only on :meth:`~.client.AckingSubscriber.ack`), :func:`~.client.forget_session`,
  :func:`~.client.open_connection` for publishers.

Why our own client and not paho-mqtt's ``manual_ack`` (issue 10 asked to prefer paho if it is as fast):
it is not. ``uv run python bench/mqtt_ack.py`` drains the same backlog of 50,000 QoS 1 messages of
700 bytes (Receive Maximum 1000, the PUBACK sent after a simulated store, best of 3, 2 cores, Python
3.11, paho-mqtt 2.2.0, aiomqtt 2.5.1, 2026-12-07, another test session running meanwhile):

===========================================  ==============  ===================
client                                       messages / s    subscriber CPU / msg
===========================================  ==============  ===================
this kit (asyncio stream, bulk decode)       125,306         3.7 us
paho-mqtt ``manual_ack``, own network thread 5,334           143.4 us
aiomqtt over paho ``manual_ack``             5,324           174.1 us
===========================================  ==============  ===================

A second run (load average 4-5) gave the same picture: 139,359 msg/s at 3.5 us, 6,229 at 143.6 us,
5,762 at 157.4 us. The paho figure includes its network thread contending for the GIL with the
asyncio side that stores and acks; acking inside paho's thread would save the hand-over but put the
durable store there too.

paho reads a packet at a time (a few ``recv`` calls and a ``MQTTMessage`` per message), and each
``ack()`` queues a PUBACK and wakes its loop through a socket pair; aiomqtt adds an ``asyncio.Queue``
and a task per message on top and has no manual-ack option of its own (its paho client underneath has
to be switched over). At the ingest target (10,000 msg/s) paho alone would need 1.4 to 1.7 cores, more
than the machine gives the whole device service; the kit needs 0.04. So device ingest keeps this
client. Publishing devices, the bridge and the services' command paths, which need neither rate nor
manual acknowledgement, stay on aiomqtt (:mod:`nattery_shared.mqtt`).
"""
